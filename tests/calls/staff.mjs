// staff.mjs - the staff side of the call tests: matrix-js-sdk's call
// implementation (src/webrtc/call.ts, the code Element Web uses), logged in
// as a staff user against the real Synapse, in a headless Chromium page.
// Bundled by `npm run bundle` into build/staff.js; tests/browser/test_calls.py
// drives it through window.staff.
//
// TURN: Element takes its servers from the homeserver (/voip/turnServer,
// Synapse's turn_uris and turn_shared_secret); the test's Synapse has none
// configured, so the test mints the same kind of credentials for the same
// coturn and hands them in.  forceTURN is Element's "Allow Peer-to-Peer for
// 1:1 calls" switched off.
import { createClient, createNewMatrixCall, ClientEvent } from 'matrix-js-sdk';
import { CallEvent } from 'matrix-js-sdk/lib/webrtc/call.js';
import { CallEventHandlerEvent } from 'matrix-js-sdk/lib/webrtc/callEventHandler.js';

// Calls by room: a client that starts may still be rung by a recent invite
// in another room (an earlier test's), which must not be taken for this one.
const S = { ready: false, rooms: {}, errors: [], incoming: 0 };
window.staff = S;

function watch(call) {
  const r = { call, states: [call.state], ended: null };
  S.rooms[call.roomId] = r;
  call.on(CallEvent.State, (st) => r.states.push(st));
  call.on(CallEvent.Hangup, () => { r.ended = { reason: call.hangupReason, party: call.hangupParty }; });
  call.on(CallEvent.Error, (e) => S.errors.push(String(e && e.message)));
}
const at = (room) => S.rooms[room] || null;

S.start = async ({ hs, userId, token, deviceId, turn, forceTURN = true }) => {
  const c = createClient({ baseUrl: hs, accessToken: token, userId, deviceId, forceTURN });
  c.turnServers = [turn];
  c.turnServersExpiry = Date.now() + 3600 * 1000;
  c.on(CallEventHandlerEvent.Incoming, (call) => { S.incoming++; watch(call); });
  const synced = new Promise((resolve) => {
    c.on(ClientEvent.Sync, (state) => { if (state === 'PREPARED' || state === 'SYNCING') resolve(); });
  });
  await c.startClient({ initialSyncLimit: 1, lazyLoadMembers: true });
  await synced;
  S.client = c;
  S.ready = true;
  return true;
};

S.place = async (roomId, video = false) => {
  const call = createNewMatrixCall(S.client, roomId);
  watch(call);
  if (video) await call.placeVideoCall(); else await call.placeVoiceCall();
  return call.callId;
};
S.answer = async (room, video = false) => { await at(room).call.answer(true, video); return true; };
S.reject = (room) => { at(room).call.reject(); return true; };
S.hangup = (room) => { at(room).call.hangup('user_hangup', false); return true; };
S.state = (room) => (at(room) ? at(room).call.state : null);
S.ended = (room) => (at(room) ? at(room).ended : null);
S.info = (room) => JSON.stringify(at(room) ? { states: at(room).states, ended: at(room).ended, errors: S.errors } : null);

// What the staff side's connection shows: the selected pair's candidate
// types, every remote candidate it learned, audio packets both ways, bytes.
S.stats = async (room) => {
  const pc = at(room) && at(room).call.peerConn;
  if (!pc) return null;
  const r = await pc.getStats();
  const byId = {};
  r.forEach((v) => { byId[v.id] = v; });
  const out = { local: null, remote: null, remotes: [], in_packets: 0, out_packets: 0, bytes_in: 0, bytes_out: 0,
    sdp: pc.remoteDescription ? pc.remoteDescription.sdp : '' };
  r.forEach((v) => {
    if (v.type === 'transport' && v.selectedCandidatePairId) {
      const p = byId[v.selectedCandidatePairId];
      out.local = byId[p.localCandidateId].candidateType;
      out.remote = byId[p.remoteCandidateId].candidateType;
      out.bytes_in = p.bytesReceived;
      out.bytes_out = p.bytesSent;
    }
    if (v.type === 'remote-candidate') out.remotes.push({ type: v.candidateType, address: v.address || v.ip });
    if (v.type === 'inbound-rtp' && v.kind === 'audio') out.in_packets += v.packetsReceived;
    if (v.type === 'outbound-rtp' && v.kind === 'audio') out.out_packets += v.packetsSent;
  });
  return out;
};
