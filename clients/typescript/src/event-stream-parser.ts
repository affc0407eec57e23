/** One dispatched event-stream message (WHATWG HTML, "Server-sent events", the interpretation rules). */
export interface EventStreamMessage {
  /** The event type: `message` unless an `event:` field named another. */
  event: string;
  /** The data lines joined with "\n". */
  data: string;
  /** The stream's last event ID when this message was dispatched (it persists across messages). */
  lastEventId: string;
}

/** Where the parser reports. */
export interface EventStreamHandlers {
  onMessage(message: EventStreamMessage): void;
  /** A comment line, without its colon and one leading space. */
  onComment?(text: string): void;
  /** A `retry:` field of ASCII digits only, in milliseconds. */
  onRetry?(milliseconds: number): void;
}

/**
 * An incremental text/event-stream parser: feed it decoded text in chunks of any size (lines may end
 * in CRLF, LF or CR, and a CRLF may be split across chunks); it dispatches each message at its blank line.
 * Decode the bytes with one TextDecoder in streaming mode, so a UTF-8 sequence cut between chunks survives.
 */
export class EventStreamParser {
  readonly #handlers: EventStreamHandlers;
  #buffer = "";
  #skipLineFeed = false;
  #data: string[] = [];
  #hasData = false;
  #eventType = "";
  #lastEventId = "";

  constructor(handlers: EventStreamHandlers) {
    this.#handlers = handlers;
  }

  /** The last event ID seen so far (set by `id:` fields). */
  get lastEventId(): string {
    return this.#lastEventId;
  }

  /** Parse another chunk of decoded text. */
  push(text: string): void {
    let chunk = text;
    if (this.#skipLineFeed && chunk.length > 0) {
      // The previous chunk ended in CR: a LF that starts this one belongs to the same line end.
      if (chunk.startsWith("\n")) chunk = chunk.slice(1);
      this.#skipLineFeed = false;
    }
    this.#buffer += chunk;
    let start = 0;
    const buffer = this.#buffer;
    for (;;) {
      const cr = buffer.indexOf("\r", start);
      const lf = buffer.indexOf("\n", start);
      if (cr === -1 && lf === -1) break;
      const end = cr === -1 ? lf : lf === -1 ? cr : Math.min(cr, lf);
      this.#line(buffer.slice(start, end));
      if (buffer[end] === "\r") {
        if (end + 1 === buffer.length) {
          this.#skipLineFeed = true;
          start = end + 1;
          break;
        }
        start = buffer[end + 1] === "\n" ? end + 2 : end + 1;
      } else {
        start = end + 1;
      }
    }
    this.#buffer = buffer.slice(start);
  }

  #line(line: string): void {
    if (line === "") {
      this.#dispatch();
      return;
    }
    if (line.startsWith(":")) {
      const text = line.slice(1);
      this.#handlers.onComment?.(text.startsWith(" ") ? text.slice(1) : text);
      return;
    }
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "data":
        this.#data.push(value);
        this.#hasData = true;
        return;
      case "event":
        this.#eventType = value;
        return;
      case "id":
        if (!value.includes("\u0000")) this.#lastEventId = value;
        return;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.#handlers.onRetry?.(Number.parseInt(value, 10));
        return;
      default:
        return; // unknown fields are ignored, as the standard says
    }
  }

  #dispatch(): void {
    const data = this.#data.join("\n");
    const hasData = this.#hasData;
    const event = this.#eventType === "" ? "message" : this.#eventType;
    this.#data = [];
    this.#hasData = false;
    this.#eventType = "";
    if (!hasData) return;
    this.#handlers.onMessage({ event, data, lastEventId: this.#lastEventId });
  }
}

const CLOSED_COMMENT = /^closed ([0-9]{3,4})(?: (.*))?$/s;

/** Read VORA's closing comment (`: closed CODE REASON`): the code and reason the socket would have closed with. */
export function parseClosedComment(text: string): { code: number; reason: string } | undefined {
  const match = CLOSED_COMMENT.exec(text);
  if (match === null) return undefined;
  return { code: Number.parseInt(match[1] ?? "", 10), reason: match[2] ?? "" };
}
