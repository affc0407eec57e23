const EVENT_ID = /^(\d{1,20})-(\d{1,20})$/;

// Each part of a Redis stream id is an unsigned 64-bit integer: VORA refuses a lastEventId with a larger part (400).
const MAX_PART = 2n ** 64n - 1n;

/** Tell whether a string is a VORA eventId (`<milliseconds>-<sequence>`, each part at most 2^64-1), as VORA takes a lastEventId. */
export function isEventId(value: string): boolean {
  const match = EVENT_ID.exec(value);
  return match !== null && BigInt(match[1] ?? "0") <= MAX_PART && BigInt(match[2] ?? "0") <= MAX_PART;
}

/** Compare two eventIds numerically part by part: negative, zero or positive, like a sort comparator. */
export function compareEventIds(a: string, b: string): number {
  const left = EVENT_ID.exec(a);
  const right = EVENT_ID.exec(b);
  if (left === null || right === null) throw new RangeError(`not an eventId: ${left === null ? a : b}`);
  // Parts go up to 2**64 - 1: beyond Number's exact range, hence BigInt.
  const [ml, sl] = [BigInt(left[1] ?? "0"), BigInt(left[2] ?? "0")];
  const [mr, sr] = [BigInt(right[1] ?? "0"), BigInt(right[2] ?? "0")];
  if (ml !== mr) return ml < mr ? -1 : 1;
  if (sl !== sr) return sl < sr ? -1 : 1;
  return 0;
}
