// The admin API from Node (`AdminClient`, HTTP POST) and what its actions do to the
// peers' SDK clients (`sessionEnded`, `peerUpdated`, server broadcasts), against a real
// server that requires tokens. Tokens are minted with `dspeak token`.

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import { AdminClient, DspeakError, ErrorCode, type SessionEndedInfo } from "../src/index.js";
import { ContractRecorder, clientFactory, mintToken, startServer, type TestServer } from "./support.js";

const SECRET = "an-sdk-test-secret-of-some-length";
let server: TestServer;
const recorder = new ContractRecorder();
const { connect, closeAll } = clientFactory(() => server, recorder);

beforeAll(async () => {
  server = await startServer(["--auth-secret", SECRET]);
});
afterEach(async () => {
  await closeAll();
  expect(recorder.problems).toEqual([]);
});
afterAll(async () => {
  await server?.stop();
});

const userToken = (identity: string, room: string, ...more: string[]) =>
  mintToken(SECRET, ["--identity", identity, "--room", room, ...more]);
const admin = () => new AdminClient({ url: server.url, token: mintToken(SECRET, ["--identity", "backend", "--admin"]) });

/** Rejects with the DspeakError's code name. */
async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof DspeakError) return error.codeName;
    throw error;
  }
  throw new Error("expected a DspeakError");
}

describe("AdminClient", () => {
  it("lists rooms and peers with identity and metadata, mutes and broadcasts", async () => {
    const room = "admin-list";
    const ann = await connect();
    const bob = await connect();
    const annJoined = await ann.join({ room, displayName: "Ann", token: userToken("user-ann", room, "--metadata", '{"color":"red"}') });
    expect(annJoined).toMatchObject({ identity: "user-ann", metadata: '{"color":"red"}' });
    const since = ann.mark();
    const bobJoined = await bob.join({ room, displayName: "Bob", token: userToken("user-bob", room) });
    expect(bobJoined.peers).toEqual([
      {
        peerId: annJoined.peerId,
        displayName: "Ann",
        identity: "user-ann",
        metadata: '{"color":"red"}',
        selfMute: false,
        selfDeaf: false,
        serverMuted: false,
      },
    ]);
    expect(await ann.waitFor("peerJoined", { since })).toMatchObject({ identity: "user-bob", metadata: null });

    const backend = admin();
    const { rooms } = await backend.listRooms();
    expect(rooms.find((r) => r.room === room)).toMatchObject({ peers: 2, producers: 0 });
    const { peers } = await backend.listPeers(room);
    expect(peers.map((p) => [p.identity, p.serverMuted])).toEqual([
      ["user-ann", false],
      ["user-bob", false],
    ]);

    const muted = ann.mark();
    await backend.mutePeer(room, bobJoined.peerId, true);
    expect(await ann.waitFor("peerUpdated", { since: muted })).toEqual({
      seq: expect.any(Number),
      type: "peerUpdated",
      peerId: bobJoined.peerId,
      serverMuted: true,
    });
    expect((await backend.listPeers(room)).peers[1]?.serverMuted).toBe(true);

    const heard = bob.waitFor("broadcast", { filter: (e) => e.from === null });
    expect(await backend.broadcast(room, { notice: "closing soon" })).toEqual({ delivered: 2 });
    expect(await heard).toEqual({ seq: expect.any(Number), type: "broadcast", from: null, payload: { notice: "closing soon" } });
  });

  it("refuses tokens that are not admin tokens, and unknown rooms", async () => {
    const user = new AdminClient({ url: server.url, token: userToken("user-x", "r") });
    expect(await codeOf(user.listRooms())).toBe("unauthorized");
    expect(await codeOf(admin().listPeers("no-such-room"))).toBe("notFound");
    const scoped = new AdminClient({ url: server.url, token: mintToken(SECRET, ["--identity", "b", "--admin", "--room", "mine"]) });
    expect(await codeOf(scoped.closeRoom("yours"))).toBe("forbidden");
    expect(ErrorCode.unauthorized).toBe(1008);
  });
});

describe("sessionEnded", () => {
  it("tells a removed peer why, stops reporting the room as joined, and events work after joining again", async () => {
    const room = "admin-remove";
    const ann = await connect();
    const bob = await connect();
    const annJoined = await ann.join({ room, displayName: "Ann", token: userToken("user-ann", room) });
    await bob.join({ room, displayName: "Bob", token: userToken("user-bob", room) });
    expect(ann.joined?.peerId).toBe(annJoined.peerId);

    const ended = new Promise<SessionEndedInfo>((resolve) => ann.on("sessionEnded", resolve));
    const left = bob.waitFor("peerLeft", { since: bob.mark() });
    await admin().removePeer(room, annJoined.peerId);
    const info = await ended;
    expect(info.reason).toBe("removed");
    expect(info.error.code).toBe(ErrorCode.forbidden);
    expect(info.error.message).toMatch(/^removed:/);
    expect(ann.joined).toBeUndefined();
    expect((await left).peerId).toBe(annJoined.peerId);

    // The connection stays; after joining again the client gets the room's events.
    expect(ann.state).toBe("open");
    const rejoined = await ann.join({ room, displayName: "Ann", token: userToken("user-ann", room) });
    expect(ann.joined?.peerId).toBe(rejoined.peerId);
    const since = ann.mark();
    const cy = await connect();
    await cy.join({ room, displayName: "Cy", token: userToken("user-cy", room) });
    expect(await ann.waitFor("peerJoined", { since })).toMatchObject({ displayName: "Cy", identity: "user-cy" });
  });

  it("says roomClosed when the backend closes the room, and replaced for a second session", async () => {
    const room = "admin-close";
    const ann = await connect();
    await ann.join({ room, displayName: "Ann", token: userToken("user-ann", room) });
    const replaced = new Promise<SessionEndedInfo>((resolve) => ann.on("sessionEnded", resolve));
    const again = await connect();
    await again.join({ room, displayName: "Ann", token: userToken("user-ann", room) });
    expect((await replaced).reason).toBe("replaced");
    expect(ann.joined).toBeUndefined();

    const closed = new Promise<SessionEndedInfo>((resolve) => again.on("sessionEnded", resolve));
    await admin().closeRoom(room);
    expect((await closed).reason).toBe("roomClosed");
    expect(again.joined).toBeUndefined();
    expect((await admin().listRooms()).rooms.some((r) => r.room === room)).toBe(false);
  });
});
