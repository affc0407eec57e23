import type { components } from "./generated/rest.js";
import type {
  CallEvent,
  ChannelOpenedEvent,
  ChannelTerminatedEvent,
  HeartbeatEvent,
  PresenceEvent,
  RecordingEvent,
  ResumeGapEvent,
} from "./generated/events.js";

export type * from "./generated/events.js";
export type { components, operations, paths } from "./generated/rest.js";

/** POST /identity/setup's body. */
export type SetupRequest = components["schemas"]["SetupIn"];
/** POST /identity/setup's answer. */
export type SetupResponse = components["schemas"]["SetupOut"];
/** A mobile device's push registration (only with holdUpMode). */
export type PushRegistration = components["schemas"]["PushRegistration"];
/** POST /identity/{identity}/eventSubscription's body. */
export type Subscription = components["schemas"]["EventsIn"];
/** A subscribable event type. */
export type EventType = components["schemas"]["EventType"];
/** GET /identity's answer. */
export type IdentitiesResponse = components["schemas"]["IdentityOut"];
/** A connection type setup accepts. */
export type ConnectionType = SetupRequest["connectionType"];

/** An event of the identity's stream: it has an eventId and is delivered once, in order. */
export type VoraEvent = CallEvent | PresenceEvent | RecordingEvent;
/**
 * The SDK's own resumeGap (VORA sends none like it): the stream was given a lastEventId that VORA would refuse with
 * 400 (not an eventId), so it never sent it and started from the live end; what came after it may be missing.
 */
export interface LocalResumeGapEvent {
  eventId: null;
  sequenceNumber: null;
  identity: string;
  type: "resumeGap";
  timestamp: string;
  data: { reason: "invalidLastEventId"; requestedEventId: string; oldestEventId: null; local: true };
}
/** Where a stream's events may be missing: VORA's resumeGap (retention, ahead) or the SDK's own. */
export type StreamGap = ResumeGapEvent | LocalResumeGapEvent;
/** What a stream's iterator yields: stream events, and resumeGap where events were lost to retention. */
export type StreamItem = VoraEvent | StreamGap;
/** Every message the channel can carry. */
export type ChannelMessage = VoraEvent | HeartbeatEvent | ChannelOpenedEvent | ChannelTerminatedEvent | ResumeGapEvent;
/** Why the server ended a channel (channelTerminated's data.reason). */
export type TerminationReason = ChannelTerminatedEvent["data"]["reason"];
