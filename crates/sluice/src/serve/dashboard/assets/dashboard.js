// The sluice dashboard's only script: buttons that call the HTTP API (with
// the token kept in this browser), the refresh of the runs list, and the live
// throughput chart of a run from its server-sent events. The pages read
// without it.
(() => {
  'use strict';
  const TOKEN = 'sluice-token';
  const FLASH = 'sluice-flash';
  const $ = (id) => document.getElementById(id);

  const tokenInput = $('token');
  if (tokenInput) {
    tokenInput.value = localStorage.getItem(TOKEN) || '';
    tokenInput.addEventListener('change', () => localStorage.setItem(TOKEN, tokenInput.value.trim()));
  }

  function flash(text, kind) {
    const box = $('flash');
    box.textContent = text;
    box.className = kind || 'ok';
  }
  const carried = sessionStorage.getItem(FLASH);
  if (carried) {
    sessionStorage.removeItem(FLASH);
    try { const [kind, text] = JSON.parse(carried); flash(text, kind); } catch (_) { /* a stale entry */ }
  }
  // Reloads the page with a message that survives the reload.
  function reloadWith(text) {
    sessionStorage.setItem(FLASH, JSON.stringify(['ok', text]));
    location.reload();
  }

  async function api(method, path, body) {
    const headers = { 'Content-Type': 'application/json' };
    const token = localStorage.getItem(TOKEN);
    if (token) headers.Authorization = 'Bearer ' + token;
    const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    try { data = await resp.json(); } catch (_) { /* not JSON */ }
    if (!resp.ok) {
      const why = (data && data.error) || resp.status + ' ' + resp.statusText;
      throw new Error(resp.status === 401 ? why + ' (set the API token at the top)' : why);
    }
    return data;
  }

  async function act(button, call) {
    button.disabled = true;
    try {
      const answer = await call();
      reloadWith(answer.message || 'done');
    } catch (e) {
      flash(e.message, 'error');
      button.disabled = false;
    }
  }

  document.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    if (!button) return;
    event.preventDefault();
    const run = Number(button.dataset.run);
    if (button.dataset.action === 'stop') act(button, () => api('POST', '/api/pipeline/stop', {}));
    if (button.dataset.action === 'resume') act(button, () => api('POST', '/api/pipeline/run', { resume: true, resume_run_id: run }));
    if (button.dataset.action === 'retry') {
      button.textContent = 'Retrying…';
      act(button, () => api('POST', '/api/pipeline/' + run + '/failures/retry'));
    }
  });

  const startForm = $('start-form');
  if (startForm) {
    startForm.addEventListener('submit', (event) => {
      event.preventDefault();
      const body = {};
      const range = startForm.querySelector('input[name=range]:checked').value;
      if (range === 'days') body.days = Number($('days').value);
      if (range === 'dates') { body.date_from = $('date_from').value; body.date_to = $('date_to').value; }
      const stories = $('auto_create_stories').value;
      if (stories) body.auto_create_stories = stories === 'true';
      const max = $('max_conversations').value;
      if (max) body.max_conversations = Number(max);
      act($('start'), () => api('POST', '/api/pipeline/run', body));
    });
  }

  // Swaps the elements of `ids` for those of a fresh render of this page.
  async function refresh(ids) {
    const resp = await fetch(location.pathname + location.search, { headers: { Accept: 'text/html' } });
    if (!resp.ok) return null;
    const fresh = new DOMParser().parseFromString(await resp.text(), 'text/html');
    for (const id of ids) {
      const now = $(id), next = fresh.getElementById(id);
      if (now && next && now.innerHTML !== next.innerHTML) now.innerHTML = next.innerHTML;
    }
    return fresh;
  }

  const runs = $('runs');
  if (runs) {
    setInterval(async () => {
      const fresh = await refresh(['runs']).catch(() => null);
      if (fresh && $('start')) $('start').disabled = fresh.querySelector('#runs tr.active') !== null;
    }, Number(runs.dataset.refresh) || 2000);
  }

  const live = $('live');
  if (live) chart(live);

  function chart(box) {
    const svg = $('chart');
    const W = 600, H = 200;
    const points = [];   // {t, rate}: records/s between two progress events
    const marks = [];    // {t, kind, label}
    const seen = new Set();
    let t0 = null, last = null, summaryDue = false;

    const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));
    function draw() {
      const tmax = Math.max(10, points.reduce((m, p) => Math.max(m, p.t), 0), marks.reduce((m, k) => Math.max(m, k.t), 0));
      const peak = points.reduce((m, p) => Math.max(m, p.rate), 0);
      const rmax = Math.max(1, peak) * 1.1;
      const x = (t) => (t / tmax * W).toFixed(1), y = (r) => (H - r / rmax * H).toFixed(1);
      let out = '';
      for (const m of marks) {
        out += `<line class="mark ${esc(m.kind)}" x1="${x(m.t)}" x2="${x(m.t)}" y1="0" y2="${H}"><title>${esc(m.label)}</title></line>`;
      }
      out += `<polyline class="line" points="${points.map((p) => x(p.t) + ',' + y(p.rate)).join(' ')}"></polyline>`;
      svg.innerHTML = out;
      svg.dataset.points = points.length;
      svg.dataset.marks = marks.length;
      if (points.length) $('rate').textContent = points[points.length - 1].rate.toFixed(0);
      $('axis').textContent = `0 – ${tmax.toFixed(0)} s · peak ${peak.toFixed(0)} records/s · ${marks.length} marks`;
    }

    // The committed state, re-rendered by the server, at most once a second.
    function summary() {
      if (summaryDue) return;
      summaryDue = true;
      setTimeout(() => { summaryDue = false; refresh(['summary', 'title']).catch(() => null); }, 1000);
    }

    function handle(type, message) {
      if (seen.has(message.lastEventId)) return; // replayed after a reconnect
      seen.add(message.lastEventId);
      const ev = JSON.parse(message.data);
      if (t0 === null) t0 = ev.ts;
      const t = ev.ts - t0;
      if (type === 'BatchProgress') {
        if (!last || ev.completed < last.completed) {
          last = { t, completed: ev.completed };
        } else if (t - last.t >= 0.25) {
          points.push({ t, rate: (ev.completed - last.completed) / (t - last.t) });
          last = { t, completed: ev.completed };
          draw();
        }
      } else if (type === 'AdapterStateChange' && ev.new_state !== 'ok') {
        // A backoff after a 429 is a rate-limit wait (the LLM and embedding clients say backing_off).
        const limited = ev.new_state === 'rate_limited' || /\b429\b|rate.?limit/i.test(ev.reason || '');
        const kind = limited ? 'rate_limited' : ev.new_state;
        marks.push({ t, kind, label: `${ev.adapter}: ${ev.new_state}${ev.reason ? ' (' + ev.reason + ')' : ''}` });
        draw();
      } else if (type === 'PhaseStarted') {
        marks.push({ t, kind: 'phase', label: 'phase ' + ev.phase });
        last = null;
        draw();
        summary();
      } else if (type === 'BatchCommitted' || type === 'PhaseFinished') {
        summary();
      } else if (type === 'RunFinished') {
        source.close();
        draw();
        summary();
      }
    }

    const source = new EventSource(box.dataset.events);
    for (const type of ['RunStarted', 'BatchProgress', 'BatchCommitted', 'AdapterStateChange', 'PhaseStarted', 'PhaseFinished', 'RunFinished']) {
      source.addEventListener(type, (message) => handle(type, message));
    }
    draw();
  }
})();
