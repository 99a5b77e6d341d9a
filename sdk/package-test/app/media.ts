// A browser app's media code against the installed package with mediasoup-client: the
// `@dspeak/sdk/mediasoup` declarations type-check together with mediasoup-client's
// (strict, no skipLibCheck). The browser test runs the same flow for real.

import { Device } from "mediasoup-client";

import { DspeakClient } from "@dspeak/sdk";
import { joinVoiceRoom, toTransportOptions, type VoiceRoom } from "@dspeak/sdk/mediasoup";

export async function talk(url: string, track: MediaStreamTrack): Promise<VoiceRoom> {
  const client = await DspeakClient.connect({ url });
  const room = await joinVoiceRoom({
    client,
    room: "lobby",
    displayName: "Ann",
    device: () => Device.factory(),
    track,
    onConsumer: (consumer) => {
      const audio = new Audio();
      audio.srcObject = new MediaStream([consumer.track]);
      void audio.play();
    },
  });
  await room.mute();
  return room;
}

export async function listenOnly(client: DspeakClient, device: Device) {
  const created = await client.createTransport({ direction: "recv" });
  return device.createRecvTransport(toTransportOptions(created));
}
