// The Node peer the transaction benchmark compares Threshold with
// (bench/peer_compare.py): an application service built on matrix-appservice,
// the HTTP layer of matrix-appservice-bridge, doing the least a safeguarding
// service must do durably.
//
// It serves PUT /_matrix/app/v1/transactions/:txnId as matrix-appservice does
// (the hs_token checked, a repeated txnId answered at once).  Each event that
// is a decision -- an m.room.member invite of a user in its namespace by
// someone else -- appends one JSON audit line to a file and fsyncs it
// (fs.writeSync + fs.fsyncSync) inside the event handler.  matrix-appservice
// emits a transaction's events synchronously before it answers, so the
// answer, 200 {}, comes after every decision of the transaction is on disk.
//
// Configuration from the environment:
//   PEER_PORT         loopback port to listen on (required)
//   PEER_HS_TOKEN     the homeserver's token (required)
//   PEER_AUDIT        the audit file, appended to (required)
//   PEER_NAMESPACE    regular expression of the user ids it owns
//                     (default ^@guest_.*:localhost$)
//   PEER_SYNC         "each" (default: one fsync per decision) or "none"
//
// On SIGTERM it closes the file and prints the counts as one JSON line.

"use strict";

const fs = require("fs");
const { AppService } = require("matrix-appservice");

function required(name) {
	const v = process.env[name];
	if (!v) {
		process.stderr.write(`peer: ${name} is not set\n`);
		process.exit(2);
	}
	return v;
}

const port = Number(required("PEER_PORT"));
const hsToken = required("PEER_HS_TOKEN");
const auditPath = required("PEER_AUDIT");
const namespace = new RegExp(process.env.PEER_NAMESPACE || "^@guest_.*:localhost$");
const sync = (process.env.PEER_SYNC || "each") === "each";

const fd = fs.openSync(auditPath, "a", 0o600);
const counts = { events: 0, decisions: 0, bytes: 0 };

const as = new AppService({ homeserverToken: hsToken });

as.on("event", (ev) => {
	counts.events++;
	if (ev.type !== "m.room.member" || !ev.content || ev.content.membership !== "invite")
		return;
	const target = ev.state_key;
	if (typeof target !== "string" || !namespace.test(target) || ev.sender === target)
		return;
	const line = JSON.stringify({
		ts: Date.now(),
		kind: "contact_blocked",
		reason: "invite_refused",
		room: ev.room_id,
		actor: ev.sender,
		subject: target,
		event_id: ev.event_id,
	}) + "\n";
	const buf = Buffer.from(line);
	let off = 0;
	while (off < buf.length)
		off += fs.writeSync(fd, buf, off, buf.length - off);
	if (sync)
		fs.fsyncSync(fd);
	counts.decisions++;
	counts.bytes += buf.length;
});

as.listen(port, "127.0.0.1").then(() => {
	process.stdout.write(`peer: listening on 127.0.0.1:${port}\n`);
});

process.on("SIGTERM", () => {
	fs.closeSync(fd);
	process.stdout.write(JSON.stringify(counts) + "\n");
	process.exit(0);
});
