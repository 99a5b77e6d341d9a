// Every error code a client can reach without an access token, through the SDK, as a
// typed DspeakError with the documented code. Error objects are validated against the
// bundle's JsonRpcError schema by the recorder.

import { createHmac } from "node:crypto";

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import { DspeakError, ErrorCode, type ErrorCodeName, type TokenClaims } from "../src/index.js";
import {
  ContractRecorder,
  clientFactory,
  referenceProduceParams,
  schemaErrors,
  startServer,
  type TestServer,
} from "./support.js";

/** Codes that need a server set up in a way these tests do not cover. */
const NOT_REACHED: ErrorCodeName[] = [
  "unavailable", // needs a server that is shutting down
  "resumeFailed", // reached by the client's own resume (test/resume.test.ts)
  "parseError", // the SDK never sends malformed JSON
  "invalidRequest", // the SDK never sends malformed requests
  "internalError", // a server bug
  "batchesNotSupported", // the SDK never batches
  "requestTooBig", // answered with id null: no call to reject (see the lifecycle `error` event)
  "wrongNode", // needs a cluster (Redis): cluster.test.ts, where `join` follows it
];

let server: TestServer;
let smallRooms: TestServer;
let withAuth: TestServer;
const recorder = new ContractRecorder();
const main = clientFactory(() => server, recorder);
const small = clientFactory(() => smallRooms, recorder);
const authed = clientFactory(() => withAuth, recorder);
const SECRET = "contract-test-secret";

/** An HS256 JWT, as a backend sharing the server's --auth-secret would mint it. */
function mintToken(claims: TokenClaims, secret = SECRET): string {
  const part = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${unsigned}.${createHmac("sha256", secret).update(unsigned).digest("base64url")}`;
}
const inOneHour = () => Math.floor(Date.now() / 1000) + 3600;
const reached = new Set<number>();

/** Runs `call`, expects a DspeakError with `name`'s code, and returns it. */
async function expectCode(name: ErrorCodeName, call: Promise<unknown>): Promise<DspeakError> {
  const error = await call.then(
    (result) => {
      throw new Error(`expected ${name}, got result ${JSON.stringify(result)}`);
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DspeakError);
  const e = error as DspeakError;
  expect({ code: e.code, codeName: e.codeName }).toEqual({ code: ErrorCode[name], codeName: name });
  expect(e.message).not.toBe("");
  reached.add(e.code);
  return e;
}

beforeAll(async () => {
  [server, smallRooms, withAuth] = await Promise.all([
    startServer(),
    startServer(["--max-peers-per-room", "1"]),
    startServer(["--auth-secret", SECRET]),
  ]);
});
afterEach(async () => {
  await Promise.all([main.closeAll(), small.closeAll(), authed.closeAll()]);
  expect(recorder.problems).toEqual([]);
});
afterAll(async () => {
  await Promise.all([server?.stop(), smallRooms?.stop(), withAuth?.stop()]);
});

/** A joined client with a send transport and a producer (reference pymediasoup params). */
async function producingPeer(room: string) {
  const client = await main.connect();
  const joined = await client.join({ room, displayName: "Producer" });
  const send = await client.createTransport({ direction: "send" });
  const { id } = await client.produce(referenceProduceParams(send.id));
  return { client, joined, producerId: id, sendTransportId: send.id };
}

describe("application errors", () => {
  it("notJoined: a room method before join", async () => {
    const client = await main.connect();
    await expectCode("notJoined", client.broadcast({ payload: 1 }));
    await expectCode("notJoined", client.createTransport({ direction: "send" }));
    await expectCode("notJoined", client.leave());
  });

  it("alreadyJoined: join twice", async () => {
    const client = await main.connect();
    await client.join({ room: "twice", displayName: "Ann" });
    await expectCode("alreadyJoined", client.join({ room: "twice", displayName: "Ann" }));
  });

  it("roomFull: more peers than --max-peers-per-room", async () => {
    const ann = await small.connect();
    const bob = await small.connect();
    await ann.join({ room: "full", displayName: "Ann" });
    await expectCode("roomFull", bob.join({ room: "full", displayName: "Bob" }));
    // Another room still has space.
    await bob.join({ room: "not-full", displayName: "Bob" });
  });

  it("payloadTooLarge: a broadcast over the size cap, a display name over 64 characters", async () => {
    const ann = await main.connect();
    await ann.join({ room: "big", displayName: "Ann" });
    // Over the 16 KiB broadcast cap, under the 64 KiB message limit.
    await expectCode("payloadTooLarge", ann.broadcast({ payload: "x".repeat(20_000) }));
    const bob = await main.connect();
    await expectCode("payloadTooLarge", bob.join({ room: "big", displayName: "B".repeat(65) }));
    // The connection stays usable.
    expect((await ann.broadcast({ payload: "small" })).delivered).toBe(0);
  });

  it("notFound: unknown producer, consumer and transport ids", async () => {
    const client = await main.connect();
    await client.join({ room: "ids", displayName: "Ann" });
    await expectCode("notFound", client.closeProducer({ producerId: "no-such-producer" }));
    await expectCode("notFound", client.resumeConsumer({ consumerId: "no-such-consumer" }));
    await expectCode("notFound", client.restartIce({ transportId: "no-such-transport" }));
    await expectCode("notFound", client.getStats({ id: "nothing" }));
  });

  it("forbidden: pausing another peer's producer", async () => {
    const listener = await main.connect();
    await listener.join({ room: "forbidden", displayName: "Listener" });
    const added = listener.waitFor("producerAdded");
    const { producerId } = await producingPeer("forbidden");
    const event = await added;
    expect(event.producerId).toBe(producerId);
    await expectCode("forbidden", listener.pauseProducer({ producerId: event.producerId }));
    await expectCode("forbidden", listener.closeProducer({ producerId: event.producerId }));
  });

  it("invalidState: producing on a recv transport", async () => {
    const client = await main.connect();
    await client.join({ room: "state", displayName: "Ann" });
    const recv = await client.createTransport({ direction: "recv" });
    await expectCode("invalidState", client.produce(referenceProduceParams(recv.id)));
  });

  it("limitExceeded: more transports than a session may hold", async () => {
    const client = await main.connect();
    await client.join({ room: "limits", displayName: "Ann" });
    const error = await (async () => {
      for (let i = 0; i < 16; i++) await client.createTransport({ direction: "recv" });
    })().catch((e: unknown) => e);
    await expectCode("limitExceeded", Promise.reject(error));
  });

  it("unsupported: consuming with empty rtpCapabilities", async () => {
    const { producerId } = await producingPeer("caps");
    const listener = await main.connect();
    await listener.join({ room: "caps", displayName: "Listener" });
    const recv = await listener.createTransport({ direction: "recv" });
    await expectCode("unsupported", listener.consume({ transportId: recv.id, producerId, rtpCapabilities: {} }));
  });
});

describe("access tokens (--auth-secret)", () => {
  it("unauthorized: no token, or a token signed with another secret", async () => {
    const client = await authed.connect();
    await expectCode("unauthorized", client.join({ room: "vip", displayName: "Ann" }));
    const forged = mintToken({ sub: "ann", room: "vip", exp: inOneHour() }, "not-the-secret");
    await expectCode("unauthorized", client.join({ room: "vip", displayName: "Ann", token: forged }));
    await expectCode("unauthorized", client.join({ room: "vip", displayName: "Ann", token: "not.a.jwt" }));
  });

  it("tokenExpired: an expired token", async () => {
    const client = await authed.connect();
    const token = mintToken({ sub: "ann", room: "vip", exp: Math.floor(Date.now() / 1000) - 60 });
    await expectCode("tokenExpired", client.join({ room: "vip", displayName: "Ann", token }));
  });

  it("forbidden: a token for another room, a missing grant", async () => {
    const client = await authed.connect();
    const other = mintToken({ sub: "ann", room: "other", exp: inOneHour() });
    await expectCode("forbidden", client.join({ room: "vip", displayName: "Ann", token: other }));
    const quiet = mintToken({ sub: "ann", room: "vip", exp: inOneHour(), canBroadcast: false });
    await client.join({ room: "vip", displayName: "Ann", token: quiet });
    await expectCode("forbidden", client.broadcast({ payload: "hi" }));
  });

  it("a valid token admits, and its name is what the room sees", async () => {
    const claims: TokenClaims = { sub: "bob", room: "vip2", name: "Robert", exp: inOneHour() };
    // The generated TokenClaims type and the schema agree on what a backend signs.
    expect(schemaErrors("TokenClaims", claims)).toBeUndefined();
    const ann = await authed.connect();
    await ann.join({ room: "vip2", displayName: "Ann", token: mintToken({ sub: "ann", room: "vip2", exp: inOneHour() }) });
    const seen = ann.waitFor("peerJoined");
    const bob = await authed.connect();
    await bob.join({ room: "vip2", displayName: "Bob", token: mintToken(claims) });
    expect((await seen).displayName).toBe("Robert");
  });
});

describe("standard JSON-RPC errors", () => {
  it("invalidParams (-32602): params of the wrong shape", async () => {
    const client = await main.connect();
    const e = await expectCode(
      "invalidParams",
      client.call("join", { room: 5, displayName: "Ann" } as never),
    );
    expect(e.method).toBe("join");
    await expectCode("invalidParams", client.call("createTransport", { direction: "sideways" } as never));
    await expectCode("invalidParams", client.broadcast({} as never));
  });

  it("methodNotFound (-32601): an unknown method", async () => {
    const client = await main.connect();
    await expectCode("methodNotFound", client.call("noSuchMethod" as never, {} as never));
  });
});

describe("coverage", () => {
  it("every documented code is reached above or listed as not reachable here", () => {
    const expected = Object.entries(ErrorCode)
      .filter(([name]) => !NOT_REACHED.includes(name as ErrorCodeName))
      .map(([, code]) => code)
      .sort();
    expect([...reached].sort()).toEqual(expected);
  });

  it("the reference client's produce params satisfy the ProduceParams schema", () => {
    expect(schemaErrors("ProduceParams", referenceProduceParams("t"))).toBeUndefined();
  });
});
