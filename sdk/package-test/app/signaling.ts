// A signaling-only program, as a Node backend or bot would write it against the
// installed package: no mediasoup-client, no DOM types. The packaging test compiles it
// as ES module and as CommonJS (strict, exactOptionalPropertyTypes, no skipLibCheck) and
// runs both against a live server. It prints one JSON line with what it saw.

import { WebSocket } from "ws";

import {
  AdminClient,
  DspeakClient,
  DspeakError,
  ErrorCode,
  type BroadcastEvent,
  type ErrorCodeValue,
  type JoinParams,
  type JoinResult,
} from "@dspeak/sdk";

const url = process.env.DSPEAK_URL;
if (!url) throw new Error("set DSPEAK_URL");
const room = process.env.DSPEAK_ROOM ?? "package-test";

async function main(): Promise<void> {
  const ann = await DspeakClient.connect({ url: url!, WebSocket, requestTimeoutMs: 5000 });
  const bob = await DspeakClient.connect({ url: url!, WebSocket, requestTimeoutMs: 5000 });
  try {
    // A typed error: broadcasting before joining.
    let notJoined: { code: ErrorCodeValue | number; codeName: string | undefined } | undefined;
    try {
      await ann.broadcast({ payload: "too early" });
    } catch (error) {
      if (error instanceof DspeakError && error.code === ErrorCode.notJoined) {
        notJoined = { code: error.code, codeName: error.codeName };
      } else {
        throw error;
      }
    }

    // Optional params may be `undefined` (here: no token unless the environment has one).
    const params: JoinParams = { room, displayName: "Ann", token: process.env.DSPEAK_TOKEN };
    const annJoined: JoinResult = await ann.join(params);

    const since = ann.mark();
    const bobJoined = await bob.join({ room, displayName: "Bob" });
    // Bob's join may be announced to Ann before this line runs; `since` keeps it.
    const peerJoined = await ann.waitFor("peerJoined", { since });

    // The admin API over HTTP POST: refused, this server has no admin tokens.
    let adminRefused: string | undefined;
    try {
      await new AdminClient({ url: url!, token: "not-an-admin-token", requestTimeoutMs: 5000 }).listRooms();
    } catch (error) {
      if (!(error instanceof DspeakError)) throw error;
      adminRefused = error.codeName;
    }

    const heard = bob.waitFor("broadcast", { filter: (e: BroadcastEvent) => e.from === annJoined.peerId });
    const { delivered } = await ann.broadcast({ payload: { text: "hello from Ann" } });
    const broadcast = await heard;

    console.log(
      JSON.stringify({
        format: typeof require === "function" ? "commonjs" : "esm",
        sessionIds: [ann.sessionId, bob.sessionId],
        notJoined,
        annPeerId: annJoined.peerId,
        bobPeerId: bobJoined.peerId,
        bobSawAnn: bobJoined.peers.map((p) => p.displayName),
        peerJoined: { peerId: peerJoined.peerId, displayName: peerJoined.displayName },
        delivered,
        adminRefused,
        broadcast: { from: broadcast.from, payload: broadcast.payload },
      }),
    );
  } finally {
    await Promise.all([ann.close(), bob.close()]);
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
