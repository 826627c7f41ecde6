// Interactive verification helpers for the e2e tests (matrix-js-sdk's VerificationRequest API
// with Rust crypto): wait for an incoming request, and run SAS to the end on both sides.
import { expect } from "vitest";
import type * as sdk from "matrix-js-sdk";
import { CryptoEvent, VerificationPhase, VerifierEvent, type ShowSasCallbacks, type VerificationRequest } from "matrix-js-sdk/lib/crypto-api/index.js";
import { until } from "./client";

/** The next verification request `client` receives from `from`. Call before sending the
 *  request, so it cannot be missed. */
export function nextRequest(client: sdk.MatrixClient, from: string): Promise<VerificationRequest> {
  return new Promise((resolve) => {
    const on = (req: VerificationRequest) => {
      if (req.otherUserId !== from) return;
      client.off(CryptoEvent.VerificationRequestReceived, on);
      resolve(req);
    };
    client.on(CryptoEvent.VerificationRequestReceived, on);
  });
}

/** Interactive SAS between the two ends of a request: the responder accepts, the initiator
 *  starts m.sas.v1, both check that they show the same seven emoji and confirm, and both wait
 *  until the verification is done. */
export async function sas(initiator: VerificationRequest, responder: VerificationRequest): Promise<void> {
  await responder.accept();
  await until("the request to be ready", async () => initiator.phase === VerificationPhase.Ready || undefined, 30_000);
  const shown = (v: NonNullable<VerificationRequest["verifier"]>) =>
    new Promise<ShowSasCallbacks>((resolve) => v.once(VerifierEvent.ShowSas, resolve));
  const initiatorVerifier = await initiator.startVerification("m.sas.v1");
  const initiatorSas = shown(initiatorVerifier);
  const responderVerifier = await until("the responder's verifier", async () => responder.verifier, 30_000);
  const responderSas = shown(responderVerifier);
  const done = Promise.all([initiatorVerifier.verify(), responderVerifier.verify()]);
  const [a, b] = await Promise.all([initiatorSas, responderSas]);
  expect(a.sas.emoji).toHaveLength(7);
  expect(a.sas.emoji?.map((e) => e[1])).toEqual(b.sas.emoji?.map((e) => e[1]));
  await Promise.all([a.confirm(), b.confirm()]);
  await done;
  await until("both requests to be done", async () => (initiator.phase === VerificationPhase.Done && responder.phase === VerificationPhase.Done) || undefined, 30_000);
}
