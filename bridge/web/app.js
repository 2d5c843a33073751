/* The guest page: plain script, no framework, nothing from another site.
 * Every string shown comes from i18n/<lang>.json; every message is set with
 * textContent, never parsed as HTML. See docs/guest-experience.md. */
'use strict';
(function () {
  var API = '_threshold/gateway/v1/';
  /* A long poll's wait: the longer, the fewer bytes an idle chat costs (each
     poll is mostly headers).  Under the gateway's 60 s cap and the 60 s idle
     timeout of common proxies. */
  var POLL_MS = 55000;
  var K_SESSION = 'g.s', K_LANG = 'g.l', K_ENTRY = 'g.e';
  var S = {};            /* the strings of the chosen language */
  var page = null;       /* GET /page */
  var lang = 'en';
  var entry = null;      /* {invite: token} or {service: name} */
  var info = null;       /* POST /invitation */
  var session = null;    /* {token, pseudonym, resume_code, keep, service} */
  var afterEnd = null;   /* the token of a chat that ended: good only for deleting the guest's data */
  var since = 0, feedGen = 0, feedCtl = null, failures = 0, wake = null;
  var closed = false, quiet = false, lastEsc = 0, shifts = [];
  var pending = {};      /* local_id -> message element */
  var seen = {};         /* feed ids already shown */
  var shown = {};        /* feed id -> its message, for a later take-down */
  var blobs = [];        /* object URLs of pictures and files fetched, revoked on leaving */
  var mediaChain = Promise.resolve(); /* fetches, one at a time */
  var strings = {};      /* language code -> its strings, each file fetched once */
  var outbox = [];       /* the guest's messages waiting for the network, in order */
  var countdown = null;  /* the "Trying again in N seconds" timer */
  var stuck = true;      /* the messages are scrolled to the newest */
  var callP = null, callMod = null; /* call.js, loaded only when a call starts (docs/calls.md) */

  function $(id) { return document.getElementById(id); }
  function each(sel, fn) { Array.prototype.forEach.call(document.querySelectorAll(sel), fn); }

  /* ---- storage: the session tab only, unless the guest chose to be kept signed in */
  function ss(k, v) {
    try {
      if (v === undefined) return sessionStorage.getItem(k);
      if (v === null) sessionStorage.removeItem(k); else sessionStorage.setItem(k, v);
    } catch (e) { /* storage may be disabled: the page still works for this load */ }
    return null;
  }
  function saveSession() {
    try {
      sessionStorage.removeItem(K_SESSION);
      localStorage.removeItem(K_SESSION);
      if (session) (session.keep ? localStorage : sessionStorage).setItem(K_SESSION, JSON.stringify(session));
    } catch (e) { /* as above */ }
  }
  function loadSession() {
    var raw = null;
    try { raw = sessionStorage.getItem(K_SESSION) || localStorage.getItem(K_SESSION); } catch (e) { /* none */ }
    try { return raw ? JSON.parse(raw) : null; } catch (e) { return null; }
  }
  function wipe() {
    try { sessionStorage.clear(); } catch (e) { /* nothing to clear */ }
    try { localStorage.clear(); } catch (e) { /* nothing to clear */ }
  }

  /* ---- strings */
  function t(k, v) {
    var s = Object.prototype.hasOwnProperty.call(S, k) ? S[k] : k;
    return v ? s.replace(/\{(\w+)\}/g, function (m, n) { return n in v ? String(v[n]) : m; }) : s;
  }
  function applyStrings() {
    each('[data-t]', function (el) { el.textContent = t(el.getAttribute('data-t')); });
    each('[data-t-label]', function (el) { el.setAttribute('aria-label', t(el.getAttribute('data-t-label'))); });
    each('[data-t-placeholder]', function (el) { el.placeholder = t(el.getAttribute('data-t-placeholder')); });
    $('exit').hidden = false;
  }
  function langInfo(code) {
    var l = page && page.languages || [];
    for (var i = 0; i < l.length; i++) if (l[i].code === code) return l[i];
    return null;
  }
  function setDir() {
    var li = langInfo(lang);
    document.documentElement.lang = lang;
    document.documentElement.dir = li && li.dir === 'rtl' ? 'rtl' : 'ltr';
  }
  function loadStrings(code) {
    var got = strings[code] || fetch('i18n/' + encodeURIComponent(code) + '.json', { credentials: 'omit' })
      .then(function (r) { if (!r.ok) throw new Error('strings'); return r.json(); });
    strings[code] = got;
    got.catch(function () { delete strings[code]; });
    return got
      .then(function (j) {
        S = j;
        lang = code;
        setDir();
        applyStrings();
      });
  }
  function guessLang() {
    var saved = ss(K_LANG);
    if (saved) return saved;
    var nav = navigator.languages || [navigator.language || 'en'];
    for (var i = 0; i < nav.length; i++) {
      var c = String(nav[i]).toLowerCase().split('-')[0];
      if (!page || langInfo(c)) return c;
    }
    return 'en';
  }

  /* ---- the API */
  function api(method, path, body, opts) {
    opts = opts || {};
    var headers = {};
    /* The gateway refuses a POST of any other type (a page elsewhere could
       send text/plain or a form without asking); a file goes as bytes. */
    if (body !== undefined)
	    headers['Content-Type'] = opts.raw ? 'application/octet-stream' : 'application/json';
    if (opts.auth && session) headers.Authorization = 'Bearer ' + session.token;
    if (opts.token) headers.Authorization = 'Bearer ' + opts.token;
    return fetch(API + path, {
      method: method, headers: headers, signal: opts.signal, credentials: 'omit', keepalive: !!opts.keepalive,
      body: body === undefined || opts.raw ? body : JSON.stringify(body)
    }).then(function (res) {
      if (res.ok && opts.blob) return res.blob();
      return res.json().catch(function () { return null; }).then(function (data) {
        if (res.ok) return data || {};
        var e = new Error((data && data.errcode) || 'HTTP ' + res.status);
        e.status = res.status;
        e.code = data && data.errcode;
        e.retry = data && data.retry_after_ms;
        throw e;
      });
    });
  }

  /* ---- screens */
  function show(name, noFocus) {
    each('.screen', function (s) { s.hidden = s.id !== 's-' + name; });
    each('dialog[open]', function (d) { d.close(); });
    $('main').className = name === 'chat' ? 'is-chat' : '';
    $('c-menu-open').hidden = name !== 'chat';
    if (page && page.title) document.title = page.title;
    var h = document.querySelector('#s-' + name + ' h1');
    if (h && !noFocus) h.focus();
  }
  function showError(retry) {
    $('e-retry').onclick = retry || function () { location.reload(); };
    show('error');
  }
  function showClosed(reason) {
    stopFeed();
    $('x-text').textContent = t('closed_' + reason);
    $('x-resume').hidden = !(reason === 'expired' && page && page.resume_codes);
    $('x-erase').hidden = !afterEnd;
    $('x-confirm-erase').hidden = true;
    $('x-receipt').hidden = true;
    $('x-close').hidden = reason === 'erasing';
    show('closed');
  }

  /* ---- an erasure: "being deleted" until the service says it is done,
     then the receipt (never "deleted" before it is) */
  function erasing(receipt) {
    afterEnd = null;
    showClosed('erasing');
    var tries = 0;
    function poll() {
      api('GET', 'erasure/' + encodeURIComponent(receipt)).then(function (r) {
        if (r.state === 'erasing') return setTimeout(poll, 1500);
        $('x-text').textContent = t(r.state === 'deleted' ? 'closed_erased' : 'closed_erase_incomplete');
        $('x-receipt').textContent = t('erase_receipt', { code: receipt });
        $('x-receipt').hidden = false;
        $('x-close').hidden = false;
      }, function () {
        tries++;
        setTimeout(poll, Math.min(30000, 1500 * Math.pow(2, Math.min(tries, 5))));
      });
    }
    poll();
  }

  /* ---- quick exit: wipe storage and the page, leave without a Back entry */
  function calls() {
    if (!callP) callP = import('./call.js').then(function (m) {
      callMod = m.start({ api: api, t: t, $: $, el: el, announce: announce });
      return callMod;
    });
    return callP;
  }
  function quickExit() {
    if (callMod) callMod.stop();
    stopFeed();
    wipe();
    forgetFiles();
    var url = page && typeof page.exit_url === 'string' && /^https?:\/\//i.test(page.exit_url)
      ? page.exit_url : 'about:blank';
    try { $('main').textContent = ''; } catch (e) { /* leaving anyway */ }
    location.replace(url);
  }

  /* ---- language */
  function showLang() {
    var list = $('lang-list');
    list.textContent = '';
    (page.languages || []).forEach(function (l) {
      var li = document.createElement('li');
      var b = document.createElement('button');
      b.type = 'button';
      b.textContent = l.name;
      b.lang = l.code;
      b.dir = l.dir === 'rtl' ? 'rtl' : 'ltr';
      b.onclick = function () {
        ss(K_LANG, l.code);
        /* A language listed in the config without its strings file: English. */
        loadStrings(l.code).catch(function () { return loadStrings('en'); })
          .then(proceed, function () { showError(); });
      };
      li.appendChild(b);
      list.appendChild(li);
    });
    show('lang');
  }

  function proceed() {
    if (entry) return showNotice();
    show('start');
  }

  /* ---- the notice and consent */
  function showNotice() {
    show('loading', true);
    $('n-error').textContent = '';
    /* Asked once per entry: a change of language shows the same answer. */
    var asked = info && info.entry === entry ? Promise.resolve(info) : api('POST', 'invitation', entry);
    asked.then(function (r) {
      r.entry = entry;
      info = r;
      var svc = r.service || {};
      $('n-service').textContent = svc.display_name || svc.name || '';
      $('n-greeting').textContent = svc.greeting || '';
      $('n-greeting').hidden = !svc.greeting;
      var langs = (r.notice && r.notice.languages) || {};
      var nl = langs[lang] ? lang : (langs.en ? 'en' : Object.keys(langs)[0]);
      info.noticeLang = nl;
      $('n-text').textContent = langs[nl] || '';
      $('n-text').lang = nl || '';
      showHours(r.hours, 'n-text');
      show('notice');
    }, function (e) {
      if (e.code === 'TH_INVITE_INVALID') return showInvalid();
      showError(showNotice);
    });
  }
  function showInvalid() {
    ss(K_ENTRY, null);
    entry = null;
    show('invalid');
  }
  function agree() {
    var btn = $('n-agree');
    btn.disabled = true;
    var body = { consent: { version: String(info.notice.version), language: info.noticeLang, agreed: true } };
    if (entry.invite) { body.invite = entry.invite; body.claim = entry.claim; } else body.service = entry.service;
    api('POST', 'redeem', body).then(function (r) {
      btn.disabled = false;
      ss(K_ENTRY, null);
      entry = null;
      startSession(r, info.service);
    }, function (e) {
      btn.disabled = false;
      if (e.code === 'TH_INVITE_INVALID') return showInvalid();
      $('n-error').textContent = t(e.status === 429 ? 'limit' : 'start_failed');
    });
  }
  function decline() {
    ss(K_ENTRY, null);
    entry = null;
    info = null;
    showClosed('declined');
  }

  /* ---- a session: from redeem or resume */
  function startSession(r, svc) {
    session = {
      token: r.session, pseudonym: r.pseudonym, resume_code: r.resume_code || null, keep: false,
      service: svc ? (svc.display_name || svc.name) : null
    };
    saveSession();
    $('w-title').textContent = t('welcome_title', { name: r.pseudonym });
    $('w-code').textContent = r.resume_code || '';
    $('w-code-box').hidden = !r.resume_code;
    $('w-keep').checked = false;
    show('welcome');
  }

  function showResume(back) {
    $('r-error').textContent = '';
    $('r-code').value = '';
    $('r-back').onclick = back;
    show('resume');
  }
  function resume(ev) {
    ev.preventDefault();
    var code = $('r-code').value.trim().toUpperCase();
    if (!code) { $('r-error').textContent = t('resume_wrong'); return; }
    api('POST', 'resume', {resume_code : code})
	    .then(
	            function(r) {
		            session = {
			            token : r.session,
			            pseudonym : r.pseudonym,
			            resume_code : r.resume_code || null,
			            keep : false
		            };
		            saveSession();
		            openChat(false);
	            },
	            function(e) {
		            $('r-error').textContent = t(
		                    e.status === 429 ? 'limit'
		                                     : (e.status === 401 ? 'resume_wrong' : 'action_failed'));
	            });
  }

  /* ---- the chat */
  /* The connection's state, beside the composer.  While the feed waits out a
     backoff it counts down to the next try, a second at a time. */
  function setStatus(key, v) {
    if (countdown) { clearInterval(countdown); countdown = null; }
    var st = $('c-status');
    st.textContent = t('status_' + key, v);
    st.className = 'status' + (key === 'offline' || key === 'reconnecting' ? ' bad' : '');
  }
  function countDown(until) {
    function tick() {
      var left = Math.max(1, Math.ceil((until - Date.now()) / 1000));
      $('c-status').textContent = t(navigator.onLine === false ? 'status_offline' : 'status_reconnecting', { s: left });
    }
    setStatus(navigator.onLine === false ? 'offline' : 'reconnecting', { s: Math.max(1, Math.ceil((until - Date.now()) / 1000)) });
    countdown = setInterval(tick, 1000);
  }

  function openChat(restoring) {
    closed = false;
    quiet = !!restoring;
    since = 0;
    seen = {};
    shown = {};
    pending = {};
    outbox = [];
    stuck = true;
    forgetFiles();
    $('c-msgs').textContent = '';
    $('c-service').textContent = session.service || (page && page.title) || '';
    $('c-me').textContent = t('chat_as', { name: session.pseudonym });
    $('c-code').textContent = session.resume_code || '';
    $('c-code-box').hidden = !session.resume_code;
    $('c-compose').hidden = false;
    $('c-leave').hidden = false;
    setStatus('connecting');
    show('chat');
    api('GET', 'session', undefined, { auth: true }).then(function (st) {
      showHours(st.hours, 'c-form');
      $('c-call').hidden = !st.calls;
      $('c-call').onclick = function () { calls().then(function (c) { c.open(); }); };
      if (st.service && st.service.display_name) {
        session.service = st.service.display_name;
        $('c-service').textContent = session.service;
        saveSession();
      }
    }, function () { /* the feed says what is wrong */ });
    feedLoop();
  }

  function stopFeed() {
    feedGen++;
    if (feedCtl) try { feedCtl.abort(); } catch (e) { /* already over */ }
    feedCtl = null;
  }

  function sleep(ms, gen) {
    return new Promise(function (resolve) {
      var id = setTimeout(done, ms);
      function done() { clearTimeout(id); wake = null; resolve(gen === feedGen); }
      wake = done;
    });
  }

  /* The feed: long polls, one after another. The first poll, and the first
     after a failure, asks for no wait, so "Connected" shows as soon as it is
     true; failures back off (1 s doubling to 30 s, with jitter) and the
     browser's "online" event cuts a backoff short. */
  function feedLoop() {
    stopFeed();
    var gen = feedGen;
    var quick = true;
    failures = 0;
    function once() {
      if (gen !== feedGen || closed) return;
      var ctl = new AbortController();
      feedCtl = ctl;
      var timer = setTimeout(function () { ctl.abort(); }, POLL_MS + 15000);
      api('GET', 'feed?since=' + since + '&timeout_ms=' + (quick ? 0 : POLL_MS), undefined,
        { auth: true, signal: ctl.signal })
        .then(function (r) {
          clearTimeout(timer);
          if (gen !== feedGen) return;
          failures = 0;
          quick = false;
          render(r.events || []);
          flush();
          quiet = false;
          if (typeof r.next === 'number' && r.next > since) since = r.next;
	  /* Where the feed stood when this page's code was current: a
	     "continued" entry after it means the code was used elsewhere. */
	  if (session && typeof session.codeAt !== 'number' && typeof r.next === 'number') {
		  session.codeAt = r.next;
		  saveSession();
	  }
	  if (r.state === 'closed') return chatClosed();
          if (!closed) setStatus(r.state === 'waiting' ? 'waiting' : 'open');
          once();
        }, function (e) {
          clearTimeout(timer);
          if (gen !== feedGen) return;
          if (e.status === 401) return sessionEnded();
          if (e.status === 410) return chatClosed();
          failures++;
          quick = true;
          var wait = e.retry || Math.min(30000, 1000 * Math.pow(2, failures - 1)) * (0.75 + Math.random() / 2);
          countDown(Date.now() + wait);
          sleep(wait, gen).then(function (still) {
            if (countdown) { clearInterval(countdown); countdown = null; }
            if (still) once();
          });
        });
    }
    once();
  }

  function fmtTime(ts) {
    try {
      return new Intl.DateTimeFormat(lang, { hour: 'numeric', minute: '2-digit' }).format(new Date(ts));
    } catch (e) { return ''; }
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  /* Text from staff or another guest, made safe to show: bidirectional
     overrides, embeddings and isolates (U+202A-202E, U+2066-2069) and the
     other C0/C1 controls are removed, so "invoice\u202Egpj.exe" cannot show
     as "invoice exe.jpg"; runs of combining marks are cut to three, so a
     "zalgo" word cannot spill over other bubbles.  Each piece is then shown
     in its own isolated element (bdi, dir=auto). */
  var CONTROLS = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069\uFEFF]/g;
  var MARKS = null;
  try { MARKS = new RegExp('(\\p{M}{3})\\p{M}+', 'gu'); } catch (e) { /* an old browser: CSS clips */ }
  function clean(text) {
    var s = String(text == null ? '' : text).replace(CONTROLS, '');
    return MARKS ? s.replace(MARKS, '$1') : s;
  }

  /* One message: sender, time, body, and for the guest's own a state line. */
  function addMessage(role, who, body, ts) {
    var li = el('li', 'msg ' + role);
    var meta = el('p', 'meta');
    var w = el('bdi', 'who', clean(who));
    w.dir = 'auto';
    meta.appendChild(w);
    var time = el('time', 'time', fmtTime(ts));
    try { time.dateTime = new Date(ts).toISOString(); } catch (e) { /* no time */ }
    meta.appendChild(time);
    li.appendChild(meta);
    var b = el('p', 'body');
    if (typeof body === 'string') b.textContent = clean(body); else b.appendChild(body);
    b.dir = 'auto';
    li.appendChild(b);
    $('c-msgs').appendChild(li);
    return li;
  }

  /* A state line; `why` names the string when it is not state_<state>, and
     a failure with a reason cannot be retried. */
  function setMsgState(li, state, why) {
    li.state = state;
    var st = li.querySelector('.state');
    if (!st) { st = el('p', 'state'); li.appendChild(st); }
    st.textContent = '';
    st.className = 'state ' + state;
    st.appendChild(document.createTextNode(t(why || 'state_' + state)));
    if (why) announce(t(why));
    if (state === 'failed' && !why && !closed) {
      var b = el('button', 'retry link', t('retry'));
      b.type = 'button';
      b.onclick = function () { trySend(li); };
      st.appendChild(document.createTextNode(' '));
      st.appendChild(b);
    }
  }

  /* The newest message stays in view: the list is kept scrolled to its end
     unless the guest scrolled up to read; a shrinking screen (the keyboard
     opening) keeps it there too. */
  function nearBottom() {
    var m = $('c-msgs');
    return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
  }
  function toBottom() {
    var m = $('c-msgs');
    m.scrollTop = m.scrollHeight;
    stuck = true;
  }

  function render(events) {
    var stick = nearBottom();
    events.forEach(function (ev) {
      if (!ev || seen[ev.id]) return;
      seen[ev.id] = true;
      var from = ev.from || {};
      if (ev.kind === 'call') {
        if (Date.now() - ev.ts < 120000) calls().then(function (c) { c.signal(ev); });
        return;
      }
      if (ev.kind === 'closed') {
        if (callMod) callMod.stop();
        addMessage('note', from.name || '', ev.body || t('closed_staff'), ev.ts);
        closed = true;
        return;
      }
      if (ev.kind === 'notice') {
        addMessage('note', from.name || '', ev.body || '', ev.ts);
        announce(ev.body || '');
        return;
      }
      if (ev.kind === 'continued') {
	      /* The code was used on another device. If this page's code was
		 current before this entry, it no longer works: stop showing it. */
	      var mine = session && typeof session.codeAt === 'number' && ev.id > session.codeAt;
	      addMessage('note', from.name || '', t(mine ? 'continued' : 'continued_past'), ev.ts);
	      if (mine && session.resume_code) {
		      session.resume_code = null;
		      $('c-code').textContent = '';
		      $('c-code-box').hidden = true;
		      saveSession();
		      announce(t('continued'));
	      }
	      return;
      }
      if (ev.kind === 'removed') {
        takeDown(shown[ev.entry]);
        return;
      }
      if (ev.kind === 'edited') {
	      if (typeof ev.body === 'string')
		      showEdit(shown[ev.entry], ev.body);
	      return;
      }
      if (ev.kind !== 'message') return;
      var role = from.role === 'self' ? 'self' : from.role === 'guest' ? 'guest' : 'staff';
      if (ev.removed) {
        var mine0 = ev.local_id && pending[ev.local_id];
        if (mine0) delete pending[ev.local_id];
        takeDown(mine0 || addMessage(role, role === 'self' ? t('you') : from.name || '', '', ev.ts));
        return;
      }
      if (role === 'self') {
        var mine = ev.local_id && pending[ev.local_id];
        if (mine) {
          delete pending[ev.local_id];
          mine.file = null;
          setMsgState(mine, 'sent');
          shown[ev.id] = mine;
          return;
        }
        shown[ev.id] = addMessage('self', t('you'), ev.body || '', ev.ts);
        setMsgState(shown[ev.id], 'sent');
        return;
      }
      var at = ev.attachment;
      if (at && typeof at.name === 'string') {
        var box = el('div', 'att');
        shown[ev.id] = addMessage(role, from.name || '', at.caption || '', ev.ts);
        shown[ev.id].appendChild(box);
        if (at.kind === 'picture') showPicture(box, ev); else showFile(box, ev, null);
        announce(t(at.kind === 'picture' ? 'announce_picture' : 'announce_file', { name: from.name || '', file: at.name }));
        return;
      }
      shown[ev.id] = addMessage(role, from.name || '', ev.body || '', ev.ts);
      if (ev.edited)
	      markEdited(shown[ev.id]);
      announce(t('announce', { name: from.name || '', body: ev.body || '' }));
    });
    if (closed) chatClosed();
    if (stick && events.length) toBottom();
  }

  /* A message edited in Matrix: the new words in its place, marked edited
     (the page shows it once, never a second copy). */
  function showEdit(li, body)
  {
	  if (!li || li.classList.contains('removed'))
		  return;
	  li.querySelector('.body').textContent = clean(body);
	  markEdited(li);
  }

  function markEdited(li)
  {
	  if (!li || li.querySelector('.edited'))
		  return;
	  li.querySelector('.meta').appendChild(el('span', 'edited', t('edited')));
  }

  /* A message taken down in Matrix (its sender or a moderator removed it):
     its words, picture or file go from the screen too; who and when stay. */
  function takeDown(li) {
    if (!li) return;
    var img = li.querySelector('img');
    if (img && img.src) {
      URL.revokeObjectURL(img.src);
      blobs = blobs.filter(function (u) { return u !== img.src; });
    }
    Array.prototype.slice.call(li.querySelectorAll('.att, .state')).forEach(function (n) {
      n.parentNode.removeChild(n);
    });
    li.querySelector('.body').textContent = t('removed');
    li.classList.add('removed');
  }

  function announce(text) {
    if (quiet || !text) return;
    var live = $('live');
    var p = el('p', null, clean(text));
    live.appendChild(p);
    while (live.childNodes.length > 3) live.removeChild(live.firstChild);
  }

  function newId() {
    var a = new Uint8Array(12);
    crypto.getRandomValues(a);
    return Array.prototype.map.call(a, function (x) { return (x % 36).toString(36); }).join('');
  }

  /* A picture or file: chosen with the file input, sent with Send. The File
     is held by the input until then, by its message until the gateway has
     it, and never read, previewed or stored by the page. */
  function chosen() {
    var f = $('c-file').files[0];
    $('c-chosen-name').textContent = f ? f.name : '';
    $('c-chosen').hidden = !f;
  }
  function unchoose() {
    $('c-file').value = '';
    chosen();
  }
  /* Let go of every file: the one chosen, those waiting to be sent, and the
     object URLs of pictures and files fetched for the guest. */
  function forgetFiles() {
    unchoose();
    Object.keys(pending).forEach(function (k) { pending[k].file = null; });
    blobs.forEach(function (u) { URL.revokeObjectURL(u); });
    blobs = [];
  }
  function fileLabel(name, key) {
    var parts = t(key || 'file_msg').split('{name}');
    var f = document.createDocumentFragment();
    f.appendChild(document.createTextNode(parts[0]));
    f.appendChild(el('bdi', null, clean(name)));
    if (parts[1]) f.appendChild(document.createTextNode(parts[1]));
    return f;
  }

  /* Pictures and files sent to the guest. An <img> cannot send the session,
     so each is fetched (GET media/{id}, one at a time) and shown from an
     object URL, revoked when the guest leaves. Pictures load by themselves;
     a file only when its button is pressed. Nothing is stored. */
  function fetchMedia(id) {
    var token = session && session.token;
    var p = mediaChain.then(function () {
      if (!session || session.token !== token) throw new Error('gone');
      return api('GET', 'media/' + id, undefined, { auth: true, blob: true });
    });
    mediaChain = p.catch(function () { /* the next one goes anyway */ });
    return p.then(function (blob) {
      if (!session || session.token !== token) throw new Error('gone');
      return blob;
    });
  }
  function keep(blob) {
    var u = URL.createObjectURL(blob);
    blobs.push(u);
    return u;
  }
  function mediaFailed(box, e, again) {
    if (!session) return;
    var why = e.status === 404 ? 'media_gone' : e.code === 'TH_TOO_LARGE' ? 'media_too_big' : 'media_failed';
    var p = el('p', 'att-note', t(why));
    if (why === 'media_failed') {
      var b = el('button', 'link', t('retry'));
      b.type = 'button';
      b.onclick = again;
      p.appendChild(document.createTextNode(' '));
      p.appendChild(b);
    }
    box.textContent = '';
    box.appendChild(p);
  }
  function showPicture(box, ev, tries) {
    tries = tries || 0;
    box.textContent = '';
    box.appendChild(el('p', 'att-note', t('media_loading')));
    fetchMedia(ev.id).then(function (blob) {
      box.textContent = '';
      /* Served as a download, not a picture the page may show: a file. */
      if (!/^image\/(png|jpeg|gif|webp)$/.test(blob.type)) return showFile(box, ev, blob);
      var img = el('img');
      img.alt = clean(ev.attachment.name);
      img.src = keep(blob);
      box.appendChild(img);
    }, function (e) {
      /* Busy (many guests' pictures at once): wait as asked, a few times. */
      if ((e.status === 429 || e.status === 503) && e.retry && tries < 3 && session) {
        return setTimeout(function () { showPicture(box, ev, tries + 1); }, e.retry);
      }
      mediaFailed(box, e, function () { showPicture(box, ev); });
    });
  }
  function fmtSize(n) {
    var mb = n >= 1048576, v = mb ? n / 1048576 : Math.max(1, Math.round(n / 1024));
    try {
      return new Intl.NumberFormat(lang, {
        style: 'unit', unit: mb ? 'megabyte' : 'kilobyte', maximumFractionDigits: mb ? 1 : 0
      }).format(v);
    } catch (e) { return Math.round(v * 10) / 10 + (mb ? ' MB' : ' KB'); }
  }
  function showFile(box, ev, blob) {
    var at = ev.attachment, url = null;
    var b = el('button', 'att-file');
    b.type = 'button';
    b.appendChild(fileLabel(at.name, 'media_download'));
    if (typeof at.size === 'number') b.appendChild(el('span', null, ' (' + fmtSize(at.size) + ')'));
    b.onclick = function () {
      b.disabled = true;
      (blob ? Promise.resolve(blob) : fetchMedia(ev.id)).then(function (got) {
        b.disabled = false;
        blob = got;
        url = url || keep(got);
        var a = el('a');
        a.href = url;
        a.download = at.name;
        a.hidden = true;
        document.body.appendChild(a);
        a.click();
        document.body.removeChild(a);
      }, function (e) { mediaFailed(box, e, function () { box.textContent = ''; showFile(box, ev, null); }); });
    };
    box.appendChild(b);
    box.appendChild(el('p', 'hint', t('media_stays')));
  }

  function queue(body, file) {
    var li = addMessage('self', t('you'), file ? fileLabel(file.name) : body, Date.now());
    li.localId = newId();
    li.seq = ++seq;
    li.body = body;
    li.file = file;
    if (file) li.className += ' file';
    pending[li.localId] = li;
    /* Behind others waiting for the network: after them, in order. */
    if (outbox.length || flushing) return hold(li);
    trySend(li);
  }

  /* Offline: the message waits in memory (never stored) and goes by itself,
     in order, once the network is back ("online", or a poll that works).
     Its local id makes a second delivery of the same message harmless. */
  var seq = 0;
  function hold(li) {
    setMsgState(li, 'queued');
    var i = outbox.length;
    while (i > 0 && outbox[i - 1].seq > li.seq) i--;
    outbox.splice(i, 0, li);
  }
  var flushing = false;
  function flush() {
    if (flushing || closed || !outbox.length) return;
    flushing = true;
    var li = outbox.shift();
    trySend(li).then(function (ok) {
      flushing = false;
      if (ok) flush();
    });
  }

  function send(ev) {
    ev.preventDefault();
    var ta = $('c-text');
    var body = ta.value;
    var file = $('c-file').files[0];
    if ((!body.trim() && !file) || closed) return;
    ta.value = '';
    unchoose();
    if (body.trim()) queue(body);
    if (file) queue(null, file);
    toBottom();
    ta.focus();
  }

  /* @return a promise of true when the gateway has the message, false if not. */
  function trySend(li, tries) {
    tries = tries || 0;
    setMsgState(li, 'sending');
    var file = li.file;
    if (li.body === null && !file) { setMsgState(li, 'failed', 'state_failed'); return Promise.resolve(true); }
    /* Too big for this service: say so without spending the guest's data on it. */
    if (file && page && typeof page.max_upload_bytes === 'number' && file.size > page.max_upload_bytes) {
      li.file = null;
      delete pending[li.localId];
      setMsgState(li, 'failed', 'file_too_big');
      return Promise.resolve(true);
    }
    return (file ? api('POST', 'upload?local_id=' + li.localId, file, {auth : true, raw : true})
	  : api('POST', 'send', {local_id : li.localId, body : li.body}, {auth : true}))
	    .then(
	            function() {
		            /* Stored and queued by the gateway (it goes on to staff even if the
		               homeserver is slow): "sent" now; its echo in the feed, which comes
		               with the next answer, only ties it to its event. The gateway has
		               the file: the page lets go of it. The network works again, so a
		               feed waiting out its backoff can try now. */
		            li.file = null;
		            if (li.state !== 'failed')
			            setMsgState(li, 'sent');
		            if (wake)
			            wake();
		            return true;
	            },
	            function(e) {
		            if (li.state === 'sent')
			            return true;
		            /* No answer, or none from the gateway (a proxy's 502/504): the network. */
		            if (!closed && (!e.status || e.status === 502 || e.status === 504)) {
			            hold(li);
			            return false;
		            }
		            if ((e.status === 409 || e.status === 429 || e.status === 503) && tries < 30) {
			            return new Promise(function(resolve) {
				            setTimeout(function() {
					            resolve(trySend(li, tries + 1));
				            }, e.retry || 1000);
			            });
		            }
		            if (e.status === 401) {
			            sessionEnded();
			            return false;
		            }
		            if (e.status === 410) {
			            li.file = null;
			            setMsgState(li, 'failed');
			            chatClosed();
			            return false;
		            }
		            if (e.code === 'TH_CONVERSATION_FULL') { /* no retry can help */
			            li.file = null;
			            delete pending[li.localId];
			            setMsgState(li, 'failed', 'conv_full');
			            return true;
		            }
		            if (!file) {
			            setMsgState(li, e.status === 413 ? 'too_long' : 'failed');
			            return true;
		            }
		            var why = e.status === 413              ? 'file_too_big'
		                      : e.code === 'TH_DAMAGED'     ? 'file_damaged'
		                      : e.code === 'TH_UNSAFE_FILE' ? 'file_unsafe'
		                      : e.status === 415            ? 'file_wrong_type'
		                      : e.status === 403            ? 'file_not_here'
		                                                    : null;
		            if (why) {
			            li.file = null;
			            delete pending[li.localId];
		            }
		            setMsgState(li, 'failed', why);
		            return true;
	            });
  }

  /* Closed by staff (or ended): nothing is offered that cannot work. What
     waited for the network is marked not sent, without "Try again". */
  function chatClosed() {
    closed = true;
    stopFeed();
    unchoose();
    outbox.splice(0).forEach(function (li) { setMsgState(li, 'failed', 'state_failed'); });
    each('#c-msgs .state .retry', function (b) { b.parentNode.removeChild(b); });
    setStatus('closed');
    $('c-compose').hidden = true;
    $('c-leave').hidden = true;
    if ($('c-confirm-leave').open) $('c-confirm-leave').close();
  }

  function sessionEnded() {
    forgetFiles();
    var token = session && session.token;
    session = null;
    saveSession();
    if (!token) return showClosed('expired');
    /* Removed by staff: the session is still good for deleting the data. */
    api('GET', 'session', undefined, { token: token }).then(function (r) {
      if (r.erase_only) afterEnd = token;
      showClosed(r.erase_only ? 'staff' : 'expired');
    }, function () { showClosed('expired'); });
  }

  /* ---- the menu (the chat's other actions) and the confirm steps of End
     chat and Delete my data: modal dialogs, one at a time.  Each has its own
     Quick exit; Esc or its Close/Cancel button closes it. */
  function openDialog(id, from) {
    each('dialog[open]', function (d) { d.close(); });
    var d = $(id);
    d.returnFocus = from || null;
    var err = d.querySelector('.c-confirm-error');
    if (err) err.textContent = '';
    d.showModal();
    d.querySelector('h2').focus();
  }
  function closeDialog(d) {
    if (!d.open) return;
    d.close();
  }
  function confirmed(id, path, body, reason) {
    var box = $(id);
    var buttons = box.querySelectorAll('button');
    Array.prototype.forEach.call(buttons, function (b) { b.disabled = true; });
    api('POST', path, body, { auth: true }).then(done, function (e) {
      if (path === 'leave' && (e.status === 401 || e.status === 410)) return done();
      Array.prototype.forEach.call(buttons, function (b) { b.disabled = false; });
      box.querySelector('.c-confirm-error').textContent = e.status === 409 ? t('erase_held')
        : t(e.status === 401 ? 'closed_expired' : 'action_failed');
    });
    function done(r) {
      Array.prototype.forEach.call(buttons, function (b) { b.disabled = false; });
      closeDialog(box);
      /* After "End chat" the page keeps the token for one thing: "Delete my data". */
      afterEnd = path === 'leave' && session ? session.token : null;
      session = null;
      stopFeed();
      wipe();
      forgetFiles();
      if (path === 'erase' && r && r.receipt) return erasing(r.receipt);
      showClosed(reason);
    }
  }

  /* ---- opening hours: outside them, a closed notice saying when someone
     will read, and the service's crisis signposting, placed before what the
     guest would read or type next (the "hours" of POST invitation and GET
     session).  Self-contained: it makes and removes its own box. */
  function showHours(h, beforeId) {
    var at = $(beforeId);
    if (!at) return;
    var old = at.parentNode.querySelector('.hours-box');
    if (old) old.parentNode.removeChild(old);
    if (!h || h.open) return;
    var box = document.createElement('div');
    box.className = 'hours-box';
    box.setAttribute('role', 'note');
    var p = document.createElement('p');
    var when = h.opens_ms ? new Date(h.opens_ms).toLocaleString(lang || undefined, {
      weekday: 'long', hour: '2-digit', minute: '2-digit' }) : '';
    p.textContent = when ? t('closed_now_until', { when: when }) : t('closed_now');
    box.appendChild(p);
    var signs = h.signposting || {};
    var sl = signs[lang] ? lang : (signs.en ? 'en' : Object.keys(signs)[0]);
    if (sl) {
      var sp = document.createElement('p');
      sp.className = 'signposting';
      sp.lang = sl;
      sp.textContent = signs[sl];
      box.appendChild(sp);
    }
    at.parentNode.insertBefore(box, at);
  }

  /* ---- "I need help now": one tap, confirmed quietly (POST help).  Self-
     contained: it adds its own button to the chat's actions and its own
     quiet confirmation under them. */
  function wireHelp() {
    /* First in the Options sheet, above ending and deleting. */
    var actions = $('c-menu-more');
    if (!actions || actions.querySelector('.c-help')) return;
    var b = document.createElement('button');
    b.type = 'button';
    b.className = 'primary c-help';
    b.setAttribute('data-t', 'help_now');
    var note = document.createElement('p');
    note.className = 'hint c-help-done';
    note.setAttribute('role', 'status');
    note.hidden = true;
    actions.insertBefore(b, actions.firstChild);
    actions.parentNode.insertBefore(note, actions.nextSibling);
    b.onclick = function () {
      b.disabled = true;
      api('POST', 'help', {}, { auth: true }).then(function () {
        note.textContent = t('help_sent');
        note.hidden = false;
        setTimeout(function () { b.disabled = false; }, 60000);
      }, function () {
        b.disabled = false;
        note.textContent = t('help_failed');
        note.hidden = false;
      });
    };
  }

  /* ---- start */
  /* The link's fragment, read and taken out of the address (and this tab's
     entry) before anything else runs.  Chromium has already written the
     address to its history by now: what makes that copy useless is the
     claim (docs/guest-experience.md, "The link and the browser's history").
     The first open binds the invitation to a random claim kept in this tab
     only; the same link opened again anywhere else finds it taken. */
  function readFragment() {
    var h = location.hash.replace(/^#/, '');
    if (!h) return null;
    var p = new URLSearchParams(h);
    history.replaceState(null, '', location.pathname + location.search);
    if (p.get('invite')) return { invite: p.get('invite'), claim: newClaim() };
    if (p.get('service')) return { service: p.get('service') };
    return null;
  }
  function newClaim() {
    var a = new Uint8Array(24);
    crypto.getRandomValues(a);
    return btoa(String.fromCharCode.apply(null, a)).replace(/\+/g, '-').replace(/\//g, '_');
  }

  /* The visual viewport is what the guest sees: the on-screen keyboard takes
     the rest.  The page is made exactly that tall, so the composer sits just
     above the keyboard and the newest message just above the composer. */
  function fitViewport() {
    var vv = window.visualViewport;
    var h = vv ? vv.height : window.innerHeight;
    var keep = stuck && !$('s-chat').hidden;
    document.documentElement.style.setProperty('--app-h', Math.round(h) + 'px');
    if (window.scrollY) window.scrollTo(0, 0);
    if (keep) toBottom();
  }

  function wire() {
    each('.exit', function (b) { b.onclick = quickExit; });
    document.addEventListener('keydown', function (e) {
      var now = Date.now();
      if (e.key === 'Shift' && !e.repeat) {
        // Shift three times, GOV.UK's pattern: a keyboard with no Esc key
        shifts = shifts.filter(function (t) { return now - t < 1500; });
        shifts.push(now);
        if (shifts.length >= 3) quickExit();
        return;
      }
      if (e.key !== 'Escape' && e.key !== 'Esc') return;
      if (now - lastEsc < 1500) { e.preventDefault(); quickExit(); return; }
      lastEsc = now;
    });
    $('n-agree').onclick = agree;
    $('n-decline').onclick = decline;
    each('.to-lang', function (b) { b.onclick = showLang; });
    each('.to-resume', function (b) {
      b.onclick = function () {
        var from = document.querySelector('.screen:not([hidden])').id.slice(2);
        showResume(function () { show(from); });
      };
    });
    $('r-form').onsubmit = resume;
    $('w-keep').onchange = function () {
      if (!session) return;
      session.keep = $('w-keep').checked;
      saveSession();
    };
    $('w-go').onclick = function () { openChat(false); };
    $('c-form').onsubmit = send;
    $('c-file').onchange = chosen;
    $('c-chosen-remove').onclick = function () { unchoose(); $('c-file').focus(); };
    $('c-text').onkeydown = function (e) {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) send(e);
    };
    $('c-msgs').addEventListener('scroll', function () { stuck = nearBottom(); });
    $('c-menu-open').onclick = function () { openDialog('c-menu', $('c-menu-open')); };
    $('c-leave').onclick = function () { openDialog('c-confirm-leave', $('c-menu-open')); };
    $('c-erase').onclick = function () { openDialog('c-confirm-erase', $('c-menu-open')); };
    $('c-leave-yes').onclick = function () { confirmed('c-confirm-leave', 'leave', {}, 'left'); };
    $('c-erase-yes').onclick = function () { confirmed('c-confirm-erase', 'erase', { confirm: true }, 'erased'); };
    each('.d-close', function (b) { b.onclick = function () { closeDialog(b.closest('dialog')); }; });
    each('dialog', function (d) {
      d.addEventListener('close', function () {
        var to = d.returnFocus;
        d.returnFocus = null;
        if (to && !to.hidden && !document.querySelector('dialog[open]')) to.focus();
      });
    });
    window.addEventListener('online', function () { if (wake) wake(); flush(); });
    $('x-erase').onclick = function () {
      $('x-confirm-erase').hidden = false;
      $('x-erase').hidden = true;
      $('x-confirm-erase').querySelector('h2').focus({ preventScroll: true });
    };
    $('x-erase-no').onclick = function () {
      $('x-confirm-erase').hidden = true;
      $('x-erase').hidden = false;
      $('x-erase').focus();
    };
    $('x-erase-yes').onclick = function () {
      var box = $('x-confirm-erase');
      $('x-erase-yes').disabled = true;
      api('POST', 'erase', { confirm: true }, { token: afterEnd }).then(function (r) {
        $('x-erase-yes').disabled = false;
        erasing(r.receipt);
      }, function (e) {
        $('x-erase-yes').disabled = false;
        box.querySelector('.c-confirm-error').textContent = e.status === 409 ? t('erase_held')
          : t(e.status === 401 ? 'closed_expired' : 'action_failed');
      });
    };
    /* A poll in flight when the network goes will not come back: drop it now. */
    window.addEventListener('offline', function () {
      if (feedCtl && !closed && !$('s-chat').hidden) feedCtl.abort();
    });
    /* A new link opened in this tab changes only the fragment: start again from it. */
    window.addEventListener('hashchange', function () { if (location.hash) location.reload(); });
    if (window.visualViewport) window.visualViewport.addEventListener('resize', fitViewport);
    window.addEventListener('resize', fitViewport);
    fitViewport();
  }

  function start(fresh) {
    if (fresh) ss(K_ENTRY, JSON.stringify(fresh));
    try { entry = fresh || JSON.parse(ss(K_ENTRY) || 'null'); } catch (e) { entry = null; }
    var first = loadStrings(guessLang()).catch(function () { return loadStrings('en'); });
    api('GET', 'page').then(function (p) {
      page = p;
      if (p.title) document.title = p.title;
      $('bar-title').textContent = p.title || '';
      each('.to-resume', function (b) { b.hidden = !p.resume_codes; });
      if (p.accept_pdf) {
	      $('c-file').setAttribute('accept', 'image/jpeg,image/png,image/webp,application/pdf');
	      $('c-file-hint').setAttribute('data-t', 'file_hint_pdf');
      }
      var want = ss(K_LANG) || guessLang();
      if (!langInfo(want)) want = langInfo('en') ? 'en' : ((p.languages || [])[0] || { code: 'en' }).code;
      return first.then(function () {
        if (want !== lang) return loadStrings(want);
        setDir();
      });
    }).then(function () {
      session = fresh ? null : loadSession();
      if (session && session.token) {
        return openChat(true);
      }
      if (!ss(K_LANG) && (page.languages || []).length > 1) return showLang();
      proceed();
    }).catch(function () {
      first.then(function () { showError(); }, function () { showError(); });
    });
  }

  var fresh = readFragment();
  wire();
  wireHelp();
  start(fresh);
}());
