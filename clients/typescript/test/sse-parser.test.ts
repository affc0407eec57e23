// The event-stream parser on its own: no VORA needed (this file does not load the harness).
import assert from "node:assert/strict";
import { test } from "node:test";
import { EventStreamParser, parseClosedComment } from "../src/index.js";
import type { EventStreamMessage } from "../src/index.js";

interface Parsed {
  messages: EventStreamMessage[];
  comments: string[];
  retries: number[];
}

/** Feed the chunks through one parser (and one streaming decoder, for byte chunks) and collect what it reports. */
function parse(chunks: readonly (string | Uint8Array)[]): Parsed {
  const parsed: Parsed = { messages: [], comments: [], retries: [] };
  const parser = new EventStreamParser({
    onMessage: (message) => parsed.messages.push(message),
    onComment: (text) => parsed.comments.push(text),
    onRetry: (ms) => parsed.retries.push(ms),
  });
  const decoder = new TextDecoder();
  for (const chunk of chunks) parser.push(typeof chunk === "string" ? chunk : decoder.decode(chunk, { stream: true }));
  parser.push(decoder.decode());
  return parsed;
}

/** Every way of cutting the text in two. */
function everySplit(text: string): string[][] {
  return Array.from({ length: text.length + 1 }, (_, at) => [text.slice(0, at), text.slice(at)]);
}

test("VORA's framing: retry, a stream event with id, a lifecycle event without, the closing comment", () => {
  const stream =
    'retry: 7345\n\nid: 1795396666123-0\ndata: {"type":"presence","eventId":"1795396666123-0"}\n\n' +
    'data: {"type":"heartbeat"}\n\n: closed 1000 logout\n\n';
  const parsed = parse([stream]);
  assert.deepEqual(parsed.retries, [7345]);
  assert.deepEqual(
    parsed.messages.map((m) => [m.event, m.data, m.lastEventId]),
    [
      ["message", '{"type":"presence","eventId":"1795396666123-0"}', "1795396666123-0"],
      ["message", '{"type":"heartbeat"}', "1795396666123-0"],
    ],
  );
  assert.deepEqual(parsed.comments, ["closed 1000 logout"]);
  assert.deepEqual(parseClosedComment("closed 1000 logout"), { code: 1000, reason: "logout" });
  assert.deepEqual(parseClosedComment("closed 1001"), { code: 1001, reason: "" });
  assert.deepEqual(parseClosedComment("closed 4008 slow consumer: too far behind"), {
    code: 4008,
    reason: "slow consumer: too far behind",
  });
  assert.equal(parseClosedComment("keep-alive"), undefined);
  assert.equal(parseClosedComment("closed soon"), undefined);
});

test("the same messages whatever the chunking, with LF, CRLF or CR line ends (a CRLF split between chunks included)", () => {
  const lf = 'id: 1-0\ndata: {"a":1}\n\n: note\ndata: first\ndata: second\n\nevent: other\ndata: x\n\n';
  const expected = parse([lf]);
  assert.equal(expected.messages.length, 3);
  for (const ending of ["\n", "\r\n", "\r"]) {
    const text = lf.replaceAll("\n", ending);
    for (const chunks of everySplit(text)) assert.deepEqual(parse(chunks), expected, JSON.stringify(chunks));
    assert.deepEqual(parse([...text]), expected, `one character at a time with ${JSON.stringify(ending)}`);
  }
  assert.deepEqual(
    expected.messages.map((m) => [m.event, m.data]),
    [
      ["message", '{"a":1}'],
      ["message", "first\nsecond"],
      ["other", "x"],
    ],
  );
});

test("UTF-8 cut inside a character between chunks decodes whole", () => {
  const text = 'data: {"from":"Zoë ☎ 📞 Ñandú"}\n\n';
  const bytes = new TextEncoder().encode(text);
  for (let at = 0; at <= bytes.length; at++) {
    const parsed = parse([bytes.slice(0, at), bytes.slice(at)]);
    assert.deepEqual(
      parsed.messages.map((m) => m.data),
      ['{"from":"Zoë ☎ 📞 Ñandú"}'],
      `cut at byte ${at}`,
    );
  }
  const oneByteAtATime = parse(Array.from(bytes, (byte) => Uint8Array.of(byte)));
  assert.equal(oneByteAtATime.messages[0]?.data, '{"from":"Zoë ☎ 📞 Ñandú"}');
});

test("the standard's corner cases: one space stripped, no colon, empty data, bad retry, NUL in id, no blank line at the end", () => {
  const parsed = parse([
    "data:no space\n\n",
    "data:  two spaces\n\n",
    "data\n\n", // a field without a colon: data with an empty value, dispatched as ""
    "id\n\n", // id reset to the empty string; nothing dispatched (no data)
    "retry: 12a\nretry: 250\n\n",
    "id: bad\u0000id\ndata: kept\n\n", // an id with NUL is ignored
    "unknown: field\n\n",
    ":\n",
    "data: never dispatched (the stream ended before its blank line)\n",
  ]);
  assert.deepEqual(
    parsed.messages.map((m) => [m.data, m.lastEventId]),
    [
      ["no space", ""],
      [" two spaces", ""],
      ["", ""],
      ["kept", ""],
    ],
  );
  assert.deepEqual(parsed.retries, [250]);
  assert.deepEqual(parsed.comments, [""]);
});
