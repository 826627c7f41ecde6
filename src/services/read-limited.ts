// Reading a body of unknown length into memory with an upper bound: the bytes are counted as
// they arrive and the stream is cancelled as soon as there are more than `max` (a declared
// Content-Length is checked by the callers, each with its own rule and error).

/** Read `stream` whole into one array; more than `max` bytes cancels it and throws `tooLarge()`. */
export async function readStreamLimited(stream: ReadableStream<Uint8Array>, max: number, tooLarge: () => Error): Promise<Uint8Array> {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      await reader.cancel();
      throw tooLarge();
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}
