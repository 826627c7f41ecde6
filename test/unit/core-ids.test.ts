import { describe, it, expect } from "vitest";
import {
  isValidEventId,
  isValidLocalpart,
  isValidRoomAlias,
  isValidRoomId,
  isValidServerName,
  isValidUserId,
  parseServerName,
  parseUserId,
} from "../../src/core/ids";
import { getRoomVersion } from "../../src/core/room-versions";

const rv = (id: string) => getRoomVersion(id)!;

describe("server names", () => {
  it("accepts the spec's examples", () => {
    expect(parseServerName("matrix.org")).toEqual({ host: "matrix.org" });
    expect(parseServerName("matrix.org:8888")).toEqual({ host: "matrix.org", port: 8888 });
    expect(parseServerName("1.2.3.4")).toEqual({ host: "1.2.3.4" });
    expect(parseServerName("1.2.3.4:1234")).toEqual({ host: "1.2.3.4", port: 1234 });
    expect(parseServerName("[1234:5678::abcd]")).toEqual({ host: "[1234:5678::abcd]" });
    expect(parseServerName("[1234:5678::abcd]:5678")).toEqual({ host: "[1234:5678::abcd]", port: 5678 });
  });

  it("accepts other valid forms", () => {
    for (const ok of [
      "localhost", "a", "x-y.example", "EXAMPLE.org", "example.org:1", "example.org:65535", "example.org:00080",
      "[::]", "[::1]:8448", "[2001:db8:0:0:0:0:2:1]", "[::ffff:192.0.2.1]", "[2001:DB8::8:800:200C:417A]",
      "a".repeat(255),
    ]) {
      expect(isValidServerName(ok), ok).toBe(true);
    }
    expect(parseServerName("example.org:00080")?.port).toBe(80);
  });

  it("rejects invalid forms", () => {
    for (const bad of [
      "", ":8080", "example.org:", "example.org:0", "example.org:65536", "example.org:123456", "example.org:-1",
      "example.org:80a", "exa mple.org", "exa_mple.org", "例え.jp", "example.org/path", "user@example.org",
      "a:b:c", "1.2.3.256", "256.1.1.1", "1.2.3.4:0",
      "[1234:5678::abcd", "1234:5678::abcd", "[1::2::3]", "[1:2:3:4:5:6:7:8:9]", "[1:2:3:4:5:6:7]", "[12345::]",
      "[::g]", "[]", "[::1]x", "[::1]:", "[1.2.3.4::]", "[::1.2.3.256]", "[example.org]",
      "a".repeat(256), "example.org\u0000", "example.org\n",
    ]) {
      expect(isValidServerName(bad), JSON.stringify(bad)).toBe(false);
    }
  });
});

describe("user IDs", () => {
  it("accepts valid user IDs and splits them at the first colon", () => {
    expect(parseUserId("@alice:example.org")).toEqual({ localpart: "alice", serverName: "example.org" });
    expect(parseUserId("@a.b_c=d-e/f+g:example.org:8448")).toEqual({ localpart: "a.b_c=d-e/f+g", serverName: "example.org:8448" });
    expect(parseUserId("@x:[::1]:8448")).toEqual({ localpart: "x", serverName: "[::1]:8448" });
    expect(isValidLocalpart("0123456789abcxyz._=-/+")).toBe(true);
  });

  it("rejects non-compliant localparts under the current grammar", () => {
    for (const lp of ["", "Alice", "al ice", "al*ice", "ali#ce", "é", "a\u0000"]) {
      expect(isValidLocalpart(lp), lp).toBe(false);
      expect(isValidUserId(`@${lp}:example.org`), lp).toBe(false);
    }
  });

  it("accepts historical localparts only when asked: anything but ':' and NUL, even empty", () => {
    for (const lp of ["Alice", "al ice", "ali#ce", "é😀", "\u0007", ""]) {
      expect(isValidUserId(`@${lp}:example.org`), lp).toBe(false);
      expect(isValidUserId(`@${lp}:example.org`, { historical: true }), lp).toBe(true);
    }
    for (const lp of ["a\u0000b", "\ud800", "x\udc00"]) {
      expect(isValidUserId(`@${lp}:example.org`, { historical: true }), JSON.stringify(lp)).toBe(false);
    }
  });

  it("rejects bad shapes and server names", () => {
    for (const bad of ["alice:example.org", "@alice", "@alice:", "@alice:exa mple.org", "#alice:example.org", "@alice:example.org:0", " @alice:example.org"]) {
      expect(isValidUserId(bad), bad).toBe(false);
      expect(isValidUserId(bad, { historical: true }), bad).toBe(false);
    }
  });

  it("limits user IDs to 255 bytes (UTF-8)", () => {
    const server = "example.org"; // "@" + lp + ":" + server
    const lp = "a".repeat(255 - 2 - server.length);
    expect(isValidUserId(`@${lp}:${server}`)).toBe(true);
    expect(isValidUserId(`@${lp}a:${server}`)).toBe(false);
    // Multi-byte characters count in bytes, not UTF-16 units.
    // "@" + 121 × "é" (242 bytes) + ":example.org" = 255 bytes, but only 134 UTF-16 units.
    expect(isValidUserId(`@${"é".repeat(121)}:${server}`, { historical: true })).toBe(true);
    expect(isValidUserId(`@${"é".repeat(121)}a:${server}`, { historical: true })).toBe(false);
  });
});

describe("room IDs", () => {
  const hashId = "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ"; // spec's v12 PDU example

  it("accepts both forms without a room version", () => {
    expect(isValidRoomId("!abcdef:example.org")).toBe(true);
    expect(isValidRoomId("!x:[::1]:8448")).toBe(true);
    expect(isValidRoomId(hashId)).toBe(true);
  });

  it("uses the version's form when given one", () => {
    expect(isValidRoomId(hashId, rv("12"))).toBe(true);
    expect(isValidRoomId(hashId, rv("11"))).toBe(false);
    expect(isValidRoomId("!abcdef:example.org", rv("11"))).toBe(true);
    expect(isValidRoomId("!abcdef:example.org", rv("12"))).toBe(false);
  });

  it("rejects malformed room IDs", () => {
    for (const bad of [
      "", "!", "abcdef:example.org", "$abcdef:example.org", "!abcdef", "!:example.org", "!abc:", "!abc:bad server",
      hashId.slice(0, -1), hashId + "A", "!Nhcu5BS+UMnFX7hBVfVSoXiD7OgH6iRT/xyIuqDnpYQ", "!a\u0000b:example.org",
      "!" + "a".repeat(243) + ":example.org",
    ]) {
      expect(isValidRoomId(bad), bad).toBe(false);
    }
    expect(isValidRoomId("!" + "a".repeat(242) + ":example.org")).toBe(true);
  });
});

describe("room aliases", () => {
  it("accepts # + any non-surrogate code points except ':' and NUL + server name", () => {
    for (const ok of ["#room:example.org", "#Room With Spaces!:example.org", "#日本:example.org:8448", "#😀:[::1]"]) {
      expect(isValidRoomAlias(ok), ok).toBe(true);
    }
  });
  it("rejects malformed aliases", () => {
    for (const bad of ["room:example.org", "#room", "#:example.org", "#a\u0000:example.org", "#\ud800:example.org", "!room:example.org", "#room:", "#" + "a".repeat(243) + ":example.org"]) {
      expect(isValidRoomAlias(bad), bad).toBe(false);
    }
  });
});

describe("event IDs", () => {
  const v4id = "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"; // spec example
  const v3id = "$acR1l0raoZnm60CBwAVgqbZqoO/mYU81xysh1u7XcJk";

  it("accepts the right format per room version", () => {
    expect(isValidEventId("$a4ecee13e2accdadf56c1025:example.com", rv("1"))).toBe(true);
    expect(isValidEventId(v4id, rv("1"))).toBe(false);
    expect(isValidEventId(v3id, rv("3"))).toBe(true);
    expect(isValidEventId(v4id, rv("3"))).toBe(false);
    expect(isValidEventId(v4id, rv("4"))).toBe(true);
    expect(isValidEventId(v4id, rv("12"))).toBe(true);
    expect(isValidEventId(v3id, rv("4"))).toBe(false);
    expect(isValidEventId("$abc:example.org", rv("4"))).toBe(false);
  });

  it("accepts any format without a version, rejects garbage", () => {
    for (const ok of [v3id, v4id, "$abc:example.org"]) expect(isValidEventId(ok), ok).toBe(true);
    for (const bad of ["", "$", "abc", "!abc:example.org", v4id.slice(0, -1), v4id + "x", "$abc", "$abc:", "$:example.org", "$" + "a".repeat(243) + ":example.org"]) {
      expect(isValidEventId(bad), bad).toBe(false);
    }
  });
});
