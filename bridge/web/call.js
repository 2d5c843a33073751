/* The guest page's calls (docs/calls.md), loaded only when a call starts.
 * Matrix call signals (m.call.*, version "1") go through the gateway; media
 * flows through the TURN relay only (iceTransportPolicy "relay"), so neither
 * side learns the other's address.  Cheap by construction: Opus ~12 kbit/s,
 * DTX, 60 ms packets declared in every SDP this page sends; video only when
 * chosen, 320x180 at 15 fps, 150 kbit/s.  Text by textContent only. */
'use strict';

var LIFETIME = 60000;
var OPUS = 'maxaveragebitrate=12000;usedtx=1;stereo=0;sprop-stereo=0;useinbandfec=1';

/* The SDP this page sends: Opus at ~12 kbit/s with DTX and 60 ms packets,
   and video (when present) capped at 150 kbit/s.  The receiver's SDP is what
   the other side's sender follows, so both directions are cheap. */
export function munge(sdp) {
  var lines = sdp.split(/\r\n/);
  var opus = null, out = [], kind = '';
  lines.forEach(function (l) {
    var m = /^a=rtpmap:(\d+) opus\/48000/i.exec(l);
    if (m) opus = m[1];
  });
  lines.forEach(function (l) {
    if (/^m=/.test(l)) kind = l.slice(2, 7);
    if (/^a=ptime:|^a=maxptime:|^b=AS:/.test(l)) return;
    /* audio: no header extensions but the mid, and no transport-cc feedback:
       at 60 ms packets they would cost as much as the voice */
    if (kind === 'audio' && /^a=extmap:/.test(l) && l.indexOf('sdes:mid') < 0) return;
    if (kind === 'audio' && /^a=rtcp-fb:\d+ transport-cc/.test(l)) return;
    if (opus && l.indexOf('a=fmtp:' + opus + ' ') === 0) {
      var keep = l.slice(('a=fmtp:' + opus + ' ').length).split(';').filter(function (p) {
        return p && !/^(maxaveragebitrate|usedtx|stereo|sprop-stereo|useinbandfec)=/.test(p);
      });
      out.push('a=fmtp:' + opus + ' ' + keep.concat([OPUS]).join(';'));
      return;
    }
    out.push(l);
    if (/^c=/.test(l) && kind === 'video') out.push('b=AS:150');
    if (/^c=/.test(l) && kind === 'audio') out.push('b=AS:20');
    if (/^a=mid:/.test(l) && kind === 'audio') { out.push('a=ptime:60'); out.push('a=maxptime:60'); }
  });
  return out.join('\r\n');
}

/* A description from the other side, with the same limits declared in it:
   Chromium's sender takes its Opus frame size, bitrate and DTX from the
   remote description, so this page sends as cheaply as it receives. */
function cheap(d) { return { type: d.type, sdp: munge(d.sdp) }; }

function rand() {
  var a = new Uint8Array(9);
  crypto.getRandomValues(a);
  return Array.prototype.map.call(a, function (b) { return ('0' + b.toString(16)).slice(-2); }).join('');
}

var running = null;
/* The call code started on this page (tests read its connection's statistics). */
export function current() { return running; }

export function start(h) {
  var t = h.t, box = h.$('c-callbox'), ui = null;
  var c = null;          /* the call: {id, party, pc, stream, out, state, video, ...} */
  var party = rand();
  var rings = {};        /* call ids already handled, so a replayed feed never rings twice */

  function el(tag, cls, text) { return h.el(tag, cls, text); }
  function btn(key, fn, cls) {
    var b = el('button', cls || '', t(key));
    b.type = 'button';
    b.onclick = fn;
    return b;
  }
  function send(type, content) {
    content.call_id = c.id;
    content.party_id = party;
    content.version = '1';
    return h.api('POST', 'call/signal', { type: type, content: content }, { auth: true });
  }
  /* The words and buttons; the media elements beside them stay (a media
     element taken out of the page stops playing). */
  function panel(key, buttons, note) {
    if (!ui || ui.parentNode !== box) { ui = el('div'); box.insertBefore(ui, box.firstChild); }
    ui.textContent = '';
    box.hidden = false;
    var p = el('p', 'call-state', t(key));
    p.setAttribute('role', 'status');
    ui.appendChild(p);
    if (note) ui.appendChild(el('p', 'hint', note));
    var row = el('div', 'row');
    buttons.forEach(function (b) { row.appendChild(b); });
    ui.appendChild(row);
    h.announce(t(key));
    return p;
  }

  /* Choosing: audio, video (its cost first), or asking staff to call. */
  function open() {
    if (c) return;
    panel('call_choose', [
      btn('call_audio', function () { ring(false); }, 'primary'),
      btn('call_video', function () { ring(true); }),
      btn('call_ask', ask),
      btn('call_close', close)
    ], t('call_video_cost'));
  }
  function close() { box.hidden = true; box.textContent = ''; ui = null; }
  function ask() {
    h.api('POST', 'call/ask', {}, { auth: true }).then(function () {
      panel('call_asked', [btn('call_close', close)]);
    }, function () { panel('call_failed', [btn('call_close', close)]); });
  }

  /* A peer connection through the TURN relay only. */
  function connect() {
    return h.api('POST', 'call/turn', {}, { auth: true }).then(function (cr) {
      var pc = new RTCPeerConnection({
        iceServers: [{ urls: cr.uris, username: cr.username, credential: cr.password }],
        iceTransportPolicy: 'relay', bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require'
      });
      c.pc = pc;
      pc.onicecandidate = function (e) {
        if (!c || c.pc !== pc) return;
        /* relay only: never a host or server-reflexive candidate, even if one slipped through */
        if (e.candidate && e.candidate.candidate && !/ typ relay( |$)/.test(e.candidate.candidate)) return;
        c.queue.push(e.candidate ? { candidate: e.candidate.candidate, sdpMid: e.candidate.sdpMid,
          sdpMLineIndex: e.candidate.sdpMLineIndex } : { candidate: '' });
        if (!c.flush) c.flush = setTimeout(flush, 400);
      };
      pc.ontrack = function (e) {
        if (e.track.kind === 'audio') { c.audio.srcObject = e.streams[0] || new MediaStream([e.track]); c.audio.play().catch(function () {}); }
        if (e.track.kind === 'video' && c.video) { c.view.srcObject = e.streams[0]; c.view.hidden = false; }
      };
      pc.onconnectionstatechange = function () {
        if (!c || c.pc !== pc) return;
        if (pc.connectionState === 'connected') live();
        if (pc.connectionState === 'failed') hangup('ice_failed', 'call_failed');
      };
    });
  }
  /* The microphone (and the camera, when chosen), capped. */
  function mic(video) {
    return navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
        video: video ? { width: { ideal: 320 }, height: { ideal: 180 }, frameRate: { max: 15 } } : false
    }).then(function (stream) {
      if (!c) { stream.getTracks().forEach(function (k) { k.stop(); }); throw new Error('gone'); }
      c.stream = stream;
      stream.getTracks().forEach(function (k) {
        var s = c.pc.addTrack(k, stream);
        /* this page's own sending, capped whatever the other side declares */
        var p = s.getParameters();
        if (!p.encodings || !p.encodings.length) p.encodings = [{}];
        p.encodings[0].maxBitrate = k.kind === 'audio' ? 16000 : 150000;
        if (k.kind === 'video') p.encodings[0].maxFramerate = 15;
        s.setParameters(p).catch(function () {});
      });
      if (!video) c.pc.getTransceivers().forEach(function (x) { if (x.receiver.track.kind === 'video') x.direction = 'inactive'; });
    });
  }
  function meta() {
    var m = {};
    if (c.stream) m[c.stream.id] = { purpose: 'm.usermedia', audio_muted: !!c.muted, video_muted: !c.video };
    return m;
  }
  function flush() {
    if (!c) return;
    c.flush = null;
    if (!c.sent || !c.queue.length) { if (c.queue.length) c.flush = setTimeout(flush, 400); return; }
    var batch = c.queue.splice(0);
    send('m.call.candidates', { candidates: batch }).catch(function () {});
  }
  function media() {
    c.audio = el('audio');
    c.audio.autoplay = true;
    box.appendChild(c.audio);
    if (c.video) {
      c.view = el('video', 'call-video');
      c.view.autoplay = true;
      c.view.playsInline = true;
      c.view.hidden = true;
      box.appendChild(c.view);
    }
  }

  /* The guest rings staff. */
  function ring(video) {
    c = { id: rand(), video: video, state: 'ringing', out: true, queue: [], remote: [] };
    rings[c.id] = 1;
    panel('call_calling', [btn('call_hangup', function () { hangup('user_hangup', 'call_ended'); }, 'danger')]);
    media();
    connect().then(function () { return mic(video); }).then(function () {
      return c.pc.createOffer();
    }).then(function (o) {
      var sdp = munge(o.sdp);
      return c.pc.setLocalDescription({ type: 'offer', sdp: sdp }).then(function () {
        return send('m.call.invite', { lifetime: LIFETIME, offer: { type: 'offer', sdp: sdp },
          'org.matrix.msc3077.sdp_stream_metadata': meta() });
      });
    }).then(function () {
      c.sent = true;
      flush();
      c.timer = setTimeout(function () { if (c && c.state === 'ringing') hangup('invite_timeout', 'call_no_answer'); }, LIFETIME);
    }).catch(function () { if (c) end('call_failed'); });
  }

  /* Staff ring the guest. */
  function incoming(ev) {
    var k = ev.call.content;
    var left = (k.lifetime || LIFETIME) - (Date.now() - ev.ts);
    if (c || rings[k.call_id] || left <= 0) return;
    rings[k.call_id] = 1;
    c = { id: k.call_id, video: false, state: 'incoming', offer: k.offer, queue: [], remote: [] };
    panel('call_incoming', [
      btn('call_answer', answer, 'primary'),
      btn('call_decline', function () {
        send('m.call.reject', {}).catch(function () {});
        end('call_declined');
      }, 'danger')
    ]);
    c.timer = setTimeout(function () { if (c && c.state === 'incoming') end('call_missed'); }, left);
  }
  function answer() {
    clearTimeout(c.timer);
    c.state = 'connecting';
    panel('call_connecting', [btn('call_hangup', function () { hangup('user_hangup', 'call_ended'); }, 'danger')]);
    media();
    var pc;
    connect().then(function () {
      pc = c.pc;
      return pc.setRemoteDescription(cheap(c.offer));
    }).then(function () {
      c.remoteSet = true;
      c.remote.forEach(add);
      return mic(false);
    }).then(function () {
      return pc.createAnswer();
    }).then(function (a) {
      var sdp = munge(a.sdp);
      return pc.setLocalDescription({ type: 'answer', sdp: sdp }).then(function () {
        return send('m.call.answer', { answer: { type: 'answer', sdp: sdp },
          'org.matrix.msc3077.sdp_stream_metadata': meta() });
      });
    }).then(function () { c.sent = true; flush(); })
      .catch(function () { if (c) hangup('user_media_failed', 'call_failed'); });
  }
  function add(cand) {
    if (!cand.candidate) return;
    c.pc.addIceCandidate(cand).catch(function () {});
  }

  function live() {
    if (c.state === 'live') return;
    clearTimeout(c.timer);
    c.state = 'live';
    c.since = Date.now();
    var mute = btn('call_mute', function () {
      c.muted = !c.muted;
      c.stream.getAudioTracks().forEach(function (k) { k.enabled = !c.muted; });
      mute.textContent = t(c.muted ? 'call_unmute' : 'call_mute');
      mute.setAttribute('aria-pressed', String(!!c.muted));
    });
    var spk = btn('call_speaker_off', function () {
      c.audio.muted = !c.audio.muted;
      spk.textContent = t(c.audio.muted ? 'call_speaker_on' : 'call_speaker_off');
    });
    var st = panel('call_live', [mute, spk, btn('call_hangup', function () { hangup('user_hangup', 'call_ended'); }, 'danger')]);
    c.tick = setInterval(function () {
      var s = Math.floor((Date.now() - c.since) / 1000);
      st.textContent = t('call_live') + ' ' + Math.floor(s / 60) + ':' + ('0' + (s % 60)).slice(-2);
    }, 1000);
  }

  /* A signal from staff, from the feed. */
  function signal(ev) {
    var type = ev.call && ev.call.type, k = ev.call && ev.call.content;
    if (!k) return;
    if (type === 'm.call.invite') return incoming(ev);
    if (!c || k.call_id !== c.id) return;
    if (type === 'm.call.answer' && c.out && !c.answered) {
      c.answered = true;
      c.state = 'connecting';
      h.$('c-callbox').querySelector('.call-state').textContent = t('call_connecting');
      send('m.call.select_answer', { selected_party_id: k.party_id }).catch(function () {});
      c.pc.setRemoteDescription(cheap(k.answer)).then(function () {
        c.remoteSet = true;
        c.remote.forEach(add);
      }).catch(function () { hangup('unknown_error', 'call_failed'); });
    } else if (type === 'm.call.candidates') {
      (k.candidates || []).forEach(function (x) { if (c.remoteSet) add(x); else c.remote.push(x); });
    } else if (type === 'm.call.negotiate' && k.description) {
      var pc = c.pc;
      pc.setRemoteDescription(cheap(k.description)).then(function () {
        if (k.description.type !== 'offer') return null;
        return pc.createAnswer().then(function (a) {
          var sdp = munge(a.sdp);
          return pc.setLocalDescription({ type: 'answer', sdp: sdp }).then(function () {
            return send('m.call.negotiate', { description: { type: 'answer', sdp: sdp }, lifetime: LIFETIME });
          });
        });
      }).catch(function () {});
    } else if (type === 'm.call.hangup' || type === 'm.call.reject') {
      end(type === 'm.call.reject' || (c.out && !c.answered) ? 'call_no_answer' : 'call_ended');
    } else if (type === 'm.call.select_answer' && k.selected_party_id !== party) {
      end('call_ended');
    }
  }

  function hangup(reason, key) {
    if (!c) return;
    var body = { type: 'm.call.hangup', content: { call_id: c.id, party_id: party, version: '1', reason: reason } };
    h.api('POST', 'call/signal', body, { auth: true, keepalive: true }).catch(function () {});
    end(key);
  }
  /* Everything of the call stops at once: tracks, connection, timers. */
  function end(key) {
    if (!c) return;
    clearTimeout(c.timer);
    clearTimeout(c.flush);
    clearInterval(c.tick);
    if (c.stream) c.stream.getTracks().forEach(function (k) { k.stop(); });
    if (c.pc) try { c.pc.close(); } catch (e) { /* closed */ }
    [c.audio, c.view].forEach(function (m) { if (m) { m.srcObject = null; m.remove(); } });
    c = null;
    if (key) panel(key, [btn('call_close', close)]);
    else close();
  }

  /* Quick exit, leaving, closed: hang up and keep nothing. */
  function stop() {
    if (c) hangup('user_hangup', null);
    close();
  }

  running = { open: open, signal: signal, stop: stop, state: function () { return c && c.state; },
    stats: function () { return c && c.pc ? c.pc.getStats() : Promise.resolve(null); } };
  return running;
}
