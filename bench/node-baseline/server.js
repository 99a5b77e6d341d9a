// The Node.js baseline for `dspeak-bench`: the seed's stack (Node + `ws`) doing the
// seed's `ping -> pong` and room `broadcast` with plain JSON messages, no JSON-RPC.
//
//   node server.js [port]      prints {"port": N} on stdout once listening
//
// Messages (client -> server):
//   {"type":"ping","id":N}                 -> {"type":"pong","id":N,"timestamp":ms}
//   {"type":"join","id":N,"room":"r"}      -> {"type":"joined","id":N,"peers":k}
//   {"type":"broadcast","id":N,"payload":x}-> every other member of the room gets
//        {"type":"broadcast","from":peerId,"payload":x}; the sender {"type":"ack","id":N,"delivered":k}
// On open the server sends {"type":"welcome","peerId":...} (the seed's test message).
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 0);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
const rooms = new Map();
let nextPeer = 1;

wss.on('connection', (ws) => {
  ws.peerId = String(nextPeer++);
  ws.room = null;
  ws.send(JSON.stringify({ type: 'welcome', peerId: ws.peerId }));
  ws.on('message', (data) => {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      ws.send(JSON.stringify({ type: 'error', message: 'invalid JSON' }));
      return;
    }
    switch (msg.type) {
      case 'ping':
        ws.send(JSON.stringify({ type: 'pong', id: msg.id, timestamp: Date.now() }));
        break;
      case 'join': {
        let room = rooms.get(msg.room);
        if (!room) {
          room = new Set();
          rooms.set(msg.room, room);
        }
        ws.room = msg.room;
        room.add(ws);
        ws.send(JSON.stringify({ type: 'joined', id: msg.id, peers: room.size - 1 }));
        break;
      }
      case 'broadcast': {
        const room = rooms.get(ws.room);
        const out = JSON.stringify({ type: 'broadcast', from: ws.peerId, payload: msg.payload });
        let delivered = 0;
        if (room) {
          for (const peer of room) {
            if (peer !== ws && peer.readyState === 1) {
              peer.send(out);
              delivered++;
            }
          }
        }
        ws.send(JSON.stringify({ type: 'ack', id: msg.id, delivered }));
        break;
      }
      default:
        ws.send(JSON.stringify({ type: 'error', id: msg.id, message: 'unknown type' }));
    }
  });
  ws.on('close', () => {
    const room = rooms.get(ws.room);
    if (room) {
      room.delete(ws);
      if (room.size === 0) rooms.delete(ws.room);
    }
  });
});

wss.on('listening', () => {
  process.stdout.write(JSON.stringify({ port: wss.address().port }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
