/**
 * Type declarations of agentwire.js, the JavaScript client of the agentwire
 * WebSocket gateway (wire protocol version 1). Keep this file next to
 * agentwire.js: TypeScript then reads it for `import ... from './agentwire.js'`.
 *
 * tests/types/ checks it: a program using every public member compiles
 * (--strict), misuses do not, and its members are exactly agentwire.js's.
 *
 * @module agentwire
 */

// ------------------------------------------------------------------ errors

/** Codes of the errors the client makes itself (server errors carry the server's code). */
export type ClientErrorCode =
  | 'not_connected' // a request while the client is not 'open'
  | 'timeout' // no reply within requestTimeoutMs (or the request's timeoutMs)
  | 'connection_closed' // the socket ended before the reply
  | 'closed' // close() was called, or reconnect is false and the socket closed
  | 'gave_up' // maxRetries consecutive failed attempts
  | 'token_expired' // a fixed token expired and there is no getToken
  | 'token_error' // getToken threw or gave no token
  | 'connect_failed' // the WebSocket constructor threw
  | 'bad_message' // the server sent something that is not a JSON object
  | 'no_get_token' // refresh() without getToken
  | 'refresh_not_extended'; // getToken returned a token that does not expire later

/** Codes the server puts in `error` replies (docs/protocol.md), and `resume_failed`. */
export type ServerErrorCode =
  | 'invalid_message'
  | 'invalid_json'
  | 'invalid_token'
  | 'rate_limited'
  | 'too_many_runs'
  | 'not_found'
  | 'unavailable'
  | 'resume_failed';

/** An error with a machine-readable `code` (server error codes, or the client's own). */
export class AgentwireError extends Error {
  /**
   * @param code e.g. 'not_connected', 'timeout', 'token_expired', or a server code
   * @param details the server's reply, when there was one
   */
  constructor(code: string, message: string, details?: ServerMessage);
  name: 'AgentwireError';
  code: ClientErrorCode | ServerErrorCode | (string & {});
  /** The server's reply (an `error` or `resume_failed` message), when there was one. */
  details: ServerMessage | undefined;
}

// ----------------------------------------------------------------- helpers

/** base64url (no padding) of the UTF-8 bytes of text, without Buffer. */
export function base64url(text: string): string;

/** The claims of a JWT, decoded WITHOUT verification (only to read exp/iat); null if unreadable. */
export function decodeJwt(token: string): JwtClaims | null;

/** A JWT's claims, as decodeJwt reads them (unverified: any JSON object). */
export interface JwtClaims {
  [claim: string]: unknown;
}

// ---------------------------------------------------------- server messages

/** Any message from the server (a JSON object), as the 'message' listeners get it. */
export interface ServerMessage {
  type?: string;
  message_id?: unknown;
  [field: string]: unknown;
}

/** The first message of every connection. */
export interface ConnectionEstablished extends ServerMessage {
  type: 'connection_established';
  connection_id: string;
  user_id: string;
  /** The stream's epoch (16 hex digits); seq numbers are only comparable within one epoch. */
  epoch: string;
  /** The stream's latest seq. */
  seq: number;
  /** Whether every event after the requested `since` follows (a complete resume). */
  resumed: boolean;
  /** How many events the resume replays before the live ones. */
  missed: number;
  heartbeat_interval_ms: number;
  max_message_bytes: number;
  /** The server's clock, ms since the epoch. */
  server_time: number;
}

/** A reply that acknowledges a request: `for` names the request's type. */
export interface Ack<For extends string = string> extends ServerMessage {
  type: 'ack';
  for: For;
  message_id: string;
}

/** The ack of startAgent: the run and its thread. */
export interface StartAgentAck extends Ack<'start_agent'> {
  run_id: string;
  thread_id: string;
}

/** The ack of sendMessage: the run it started and its thread. */
export interface SendMessageAck extends Ack<'user_message'> {
  run_id: string;
  thread_id: string;
}

/** The ack of stopAgent. The run then ends with agent_completed, status 'cancelled'. */
export interface StopAgentAck extends Ack<'stop_agent'> {
  run_id: string;
}

/** The ack of a token refresh. */
export interface RefreshAck extends Ack<'refresh'> {
  /** When the connection's credential now expires, ms since the epoch. */
  expires_at: number;
}

/** What ping() resolves with: the server's pong and the round trip. */
export interface PingResult extends ServerMessage {
  type: 'pong';
  message_id: string;
  /** The client's send time, echoed. */
  timestamp: number | null;
  server_time: number;
  /** Round-trip time in ms, by the client's clock. */
  rttMs: number;
}

// ------------------------------------------------------------------ events

/** An event of the user's stream, as delivered: the publisher's fields plus the envelope. */
export interface AgentwireEvent extends ServerMessage {
  type: string;
  /** Position in the stream: 1, 2, 3... within an epoch. */
  seq: number;
  epoch: string;
  event_id: string;
  /** When the server stamped it, ms since the epoch. */
  timestamp: number;
  user_id: string;
  thread_id?: string;
  run_id?: string;
}

/** An event of an agent run: it always names its run and thread. */
export interface AgentRunEvent extends AgentwireEvent {
  thread_id: string;
  run_id: string;
}

export interface AgentStartedEvent extends AgentRunEvent {
  type: 'agent_started';
  agent_name: string;
}

export interface AgentThinkingEvent extends AgentRunEvent {
  type: 'agent_thinking';
  reasoning: string;
}

export interface ToolExecutingEvent extends AgentRunEvent {
  type: 'tool_executing';
  tool_name: string;
  parameters: { [name: string]: unknown };
}

export interface ToolCompletedEvent extends AgentRunEvent {
  type: 'tool_completed';
  tool_name: string;
  /** Any JSON value, null included. */
  results: unknown;
  /** Non-negative. */
  duration: number;
}

export type AgentCompletedStatus = 'success' | 'error' | 'cancelled' | 'timeout';

/** The last event of every run, exactly once. */
export interface AgentCompletedEvent extends AgentRunEvent {
  type: 'agent_completed';
  status: AgentCompletedStatus;
  final_response: string;
}

/** The five agent events the server validates, by type. Any other type is an AgentwireEvent. */
export interface AgentEventMap {
  agent_started: AgentStartedEvent;
  agent_thinking: AgentThinkingEvent;
  tool_executing: ToolExecutingEvent;
  tool_completed: ToolCompletedEvent;
  agent_completed: AgentCompletedEvent;
}

// --------------------------------------------------------------- lifecycle

export type ConnectionStatus = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** The argument of 'open' listeners: one per connection_established. */
export interface OpenInfo {
  connectionId: string;
  userId: string;
  epoch: string;
  seq: number;
  /** True when the connection resumed the stream where the client was. */
  resumed: boolean;
  missed: number;
  hello: ConnectionEstablished;
}

/** The argument of 'close' listeners: one per socket that ended, and one for close(). */
export interface CloseInfo {
  /** 4000: a socket the client dropped itself (reason gap, heartbeat_timeout, connect_timeout); 0: no token. */
  code: number;
  reason: string;
  /** Whether the socket had delivered connection_established (absent for close()). */
  wasOpen?: boolean;
  willReconnect: boolean;
  /** The wait before the next attempt; null when not reconnecting (absent for close()). */
  delayMs?: number | null;
}

/** The stream could not be resumed: the position it continues from, and the one lost. */
export interface ResetInfo {
  epoch: string;
  seq: number;
  previousEpoch: string | null;
  previousSeq: number | null;
}

/** The argument of 'refresh' listeners: the server accepted a refreshed token. */
export interface RefreshInfo {
  expiresAt: number;
  ack: RefreshAck;
}

/** Lifecycle notifications and what their listeners get. */
export interface LifecycleEventMap {
  open: OpenInfo;
  close: CloseInfo;
  reset: ResetInfo;
  /**
   * Usually an AgentwireError; an exception thrown by one of your listeners, by
   * onReset or by getToken (during a refresh) is passed on as it was thrown.
   */
  error: AgentwireError | Error;
  status: ConnectionStatus;
  /** Every delivered event, after the listeners of its type. */
  event: AgentwireEvent;
  /** Every server message, raw, before it is processed. */
  message: ServerMessage;
  refresh: RefreshInfo;
}

export type LifecycleName = keyof LifecycleEventMap;

/** Removes the listener it was returned for. */
export type Unsubscribe = () => void;

// ----------------------------------------------------------------- options

/** What the client needs of a WebSocket: the browser's and the `ws` package's both fit. */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType?: string;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  /** Node `ws` only: drop the socket without a closing handshake. */
  terminate?(): void;
}

/** A WebSocket constructor: called as `new WebSocket(url, protocols[, webSocketOptions])`. */
export type WebSocketConstructor = new (url: string, protocols: string[], options?: any) => WebSocketLike;

/** Why getToken is called. */
export type TokenReason = 'connect' | 'reconnect' | 'refresh' | 'expired';

/** Returns a JWT (or a promise of one); called before every connect and for every refresh. */
export type TokenProvider = (ctx: { reason: TokenReason }) => string | Promise<string>;

/** What onReset may return: nothing, or (now or in a promise) the seq your reload covered. */
export type ResetResult = void | number | { seq: number };

/** The options of AgentwireClient besides the token. */
export interface AgentwireBaseOptions {
  /** ws(s):// (or http(s)://) URL of /ws; in a browser defaults to `/ws` on the page's host. */
  url?: string | URL;
  /** WebSocket constructor (required in Node 20: `import WebSocket from 'ws'`). */
  WebSocket?: WebSocketConstructor;
  /** Third constructor argument (Node `ws` only, e.g. {headers}). */
  webSocketOptions?: object;
  /** Reconnect after a close not asked for by close(). Default true. */
  reconnect?: boolean;
  /** First backoff cap; doubles per failed attempt. Default 500. */
  backoffBaseMs?: number;
  /** Largest backoff cap. Default 30000. */
  backoffMaxMs?: number;
  /** Consecutive failed attempts before giving up. Default Infinity. */
  maxRetries?: number;
  /** Time for a socket to deliver connection_established. Default 10000. */
  connectTimeoutMs?: number;
  /** Default time for a request's reply. Default 10000. */
  requestTimeoutMs?: number;
  /** Send `refresh` before the token expires (needs getToken). Default true. */
  refresh?: boolean;
  /** How long before exp to refresh; default min(60 s, 10% of the token's lifetime). */
  refreshBeforeMs?: number;
  /** Send `heartbeat` every server heartbeat interval; replace a socket silent for two. Default true. */
  heartbeat?: boolean;
  /** Start position (with epoch; both or neither): the first connect resumes from here. */
  lastSeq?: number;
  /** Epoch of lastSeq. */
  epoch?: string;
  /**
   * The server could not replay what was missed: reload state. If it returns a
   * promise, events are held until it settles; a resolved seq (number or {seq})
   * says what the reload covered.
   */
  onReset?: (info: ResetInfo) => ResetResult | Promise<ResetResult>;
  /** For tests. Default Math.random. */
  random?: () => number;
  /** For tests. Default the global setTimeout. */
  setTimeout?: (fn: () => void, ms: number) => unknown;
  /** For tests: clears what setTimeout returned. */
  clearTimeout?: (id: any) => void;
  /** For tests. Default Date.now. */
  now?: () => number;
}

/** The options of AgentwireClient: `token` or `getToken` (or both) must be given. */
export type AgentwireOptions = AgentwireBaseOptions &
  (
    | {
        /** A fixed JWT (cannot be refreshed; use getToken for long sessions). */
        token: string;
        getToken?: TokenProvider;
      }
    | {
        token?: string;
        /** Called before every (re)connect and for every refresh, so a fresh token is always used. */
        getToken: TokenProvider;
      }
  );

/** Per-request options. */
export interface RequestOptions {
  /** Overrides requestTimeoutMs for this request. */
  timeoutMs?: number;
}

export interface StartAgentArgs {
  userRequest: string;
  threadId?: string;
  context?: object;
  settings?: object;
}

export interface SendMessageArgs {
  content: string;
  threadId?: string;
  references?: unknown;
}

/** Counters since the client was made. */
export interface ClientCounters {
  /** Reconnect attempts. */
  readonly reconnects: number;
  readonly duplicatesDropped: number;
  readonly resets: number;
  readonly gaps: number;
}

/** A name that is not a lifecycle notification (for listeners of event types). */
type NotLifecycle<T extends string> = T extends LifecycleName ? never : T;

// ------------------------------------------------------------------ client

/** A client of one user's event stream. Create it, attach listeners, then `await connect()`. */
export class AgentwireClient {
  /** @throws TypeError without token or getToken, without url outside a browser, or without a WebSocket. */
  constructor(options: AgentwireOptions);

  /** Counters: reconnect attempts, dropped duplicates, resets, gaps seen. */
  readonly counters: ClientCounters;

  get status(): ConnectionStatus;
  /** Last event seq delivered (or the position the stream starts from); null before the first connect. */
  get lastSeq(): number | null;
  /** Epoch of lastSeq. */
  get epoch(): string | null;
  /** Server id of the current connection. */
  get connectionId(): string | null;
  /** The user id the server read from the token. */
  get userId(): string | null;
  /** The underlying WebSocket of the current attempt (null between attempts). */
  get socket(): WebSocketLike | null;

  /**
   * Listens to a lifecycle notification ('open', 'close', 'reset', 'error',
   * 'status', 'event', 'message', 'refresh'), or to delivered events of one
   * type (any other name, e.g. 'agent_started').
   */
  on<K extends LifecycleName>(name: K, listener: (arg: LifecycleEventMap[K]) => void): Unsubscribe;
  on<K extends keyof AgentEventMap>(type: K, listener: (event: AgentEventMap[K]) => void): Unsubscribe;
  on<T extends string>(type: NotLifecycle<T>, listener: (event: AgentwireEvent) => void): Unsubscribe;

  /** Listens to delivered events of one type (also for a type named like a lifecycle name). */
  onEvent<K extends keyof AgentEventMap>(type: K, listener: (event: AgentEventMap[K]) => void): Unsubscribe;
  onEvent(type: string, listener: (event: AgentwireEvent) => void): Unsubscribe;

  /** Removes a listener added with on() or onEvent(). */
  off(name: string, listener: (...args: any[]) => void): void;

  /**
   * Starts connecting (retrying as configured). Resolves with the first
   * connection_established; rejects if close() is called first or the client gives up.
   */
  connect(): Promise<ConnectionEstablished>;

  /** Closes for good: no reconnect afterwards (connect() may be called again). Resolves when the socket is closed (at most ~2 s). */
  close(): Promise<void>;

  /**
   * Sends any client message and resolves with the reply carrying its message_id
   * (rejects with AgentwireError on an `error` reply, a timeout, or a closed connection).
   * Requests are not queued: while not 'open' they reject with code 'not_connected'.
   */
  request<R extends ServerMessage = ServerMessage>(type: string, payload?: object, opts?: RequestOptions): Promise<R>;

  /** Starts an agent run. Resolves with the ack (run_id, thread_id). */
  startAgent(args: StartAgentArgs): Promise<StartAgentAck>;

  /** Sends a user message (starts a run like startAgent). Resolves with the ack. */
  sendMessage(args: SendMessageArgs): Promise<SendMessageAck>;

  /** Stops a run; it ends with agent_completed status "cancelled". Resolves with the ack. */
  stopAgent(runId: string): Promise<StopAgentAck>;

  /** Round trip to the server. Resolves with the pong plus `rttMs`. */
  ping(opts?: RequestOptions): Promise<PingResult>;

  /**
   * Gets a token from getToken and sends `refresh` (done automatically before exp).
   * Resolves with the ack ({expires_at}); the token is used from then on.
   */
  refresh(): Promise<RefreshAck>;
}

export default AgentwireClient;
