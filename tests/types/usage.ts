// Uses every public member of clients/js/agentwire.js as its declarations
// (clients/js/agentwire.d.ts) describe them. tests/types/client.test.mjs
// compiles it with tsc --strict --noEmit: it must compile without a single
// error. Nothing here runs.
import WebSocket from 'ws';
import AgentwireClientDefault, {
  AgentwireClient,
  AgentwireError,
  base64url,
  decodeJwt,
  type AgentCompletedEvent,
  type AgentwireEvent,
  type AgentwireOptions,
  type ClientCounters,
  type CloseInfo,
  type ConnectionEstablished,
  type ConnectionStatus,
  type JwtClaims,
  type OpenInfo,
  type PingResult,
  type RefreshAck,
  type RefreshInfo,
  type ResetInfo,
  type SendMessageAck,
  type ServerMessage,
  type StartAgentAck,
  type StopAgentAck,
  type TokenReason,
  type WebSocketLike,
} from '../../clients/js/agentwire.js';

// Compile-time checks: Equal<A, B> is true only for identical types.
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function assertType<T>(value: T): T {
  return value;
}
function same<A, B>(proof: Equal<A, B>): void {
  void proof;
}

async function fetchToken(reason: TokenReason): Promise<string> {
  return `token-for-${reason}`;
}
async function reloadState(): Promise<number> {
  return 41;
}

// ---------------------------------------------------------------- options
const options: AgentwireOptions = {
  url: 'ws://127.0.0.1:8080/ws',
  getToken: ({ reason }) => fetchToken(reason),
  WebSocket, // the `ws` package's constructor fits
  webSocketOptions: { headers: { 'X-Trace': '1' } },
  reconnect: true,
  backoffBaseMs: 500,
  backoffMaxMs: 30_000,
  maxRetries: Infinity,
  connectTimeoutMs: 10_000,
  requestTimeoutMs: 10_000,
  refresh: true,
  refreshBeforeMs: 60_000,
  heartbeat: true,
  lastSeq: 12,
  epoch: '0123456789abcdef',
  onReset: async (info: ResetInfo) => {
    same<typeof info.previousEpoch, string | null>(true);
    same<typeof info.previousSeq, number | null>(true);
    return { seq: await reloadState() };
  },
  random: Math.random,
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id),
  now: Date.now,
};
const client = new AgentwireClient(options);

// A fixed token, the browser's WebSocket, a URL object, a synchronous onReset.
const browserClient = new AgentwireClientDefault({
  token: 'eyJhbGciOiJIUzI1NiJ9.e30.sig',
  url: new URL('wss://example.com/ws'),
  WebSocket: globalThis.WebSocket,
  onReset: ({ seq }) => seq,
});
new AgentwireClient({ token: 't', url: '/ws', onReset: () => {} });
new AgentwireClient({ token: 't', getToken: () => 't2', onReset: async () => 7 });

// ------------------------------------------------------------------ state
same<typeof client.status, ConnectionStatus>(true);
same<typeof client.lastSeq, number | null>(true);
same<typeof client.epoch, string | null>(true);
same<typeof client.connectionId, string | null>(true);
same<typeof client.userId, string | null>(true);
same<typeof client.socket, WebSocketLike | null>(true);
same<typeof client.counters, ClientCounters>(true);
const { reconnects, duplicatesDropped, resets, gaps } = client.counters;
assertType<number>(reconnects + duplicatesDropped + resets + gaps);
if (client.socket) {
  client.socket.send('{"type":"ping"}');
  client.socket.close(1000, 'bye');
  client.socket.terminate?.();
  assertType<number>(client.socket.readyState);
}
if (client.status === 'open' && client.lastSeq !== null) assertType<number>(client.lastSeq + 1);

// -------------------------------------------------------------- listeners
const offs: Array<() => void> = [
  client.on('open', (info) => {
    same<typeof info, OpenInfo>(true);
    same<typeof info.hello, ConnectionEstablished>(true);
    assertType<boolean>(info.resumed);
    assertType<number>(info.missed + info.seq);
    assertType<string>(info.connectionId + info.userId + info.epoch);
  }),
  client.on('close', (info) => {
    same<typeof info, CloseInfo>(true);
    assertType<number | null | undefined>(info.delayMs);
    assertType<boolean | undefined>(info.wasOpen);
    assertType<boolean>(info.willReconnect);
    assertType<string>(`${info.code} ${info.reason}`);
  }),
  client.on('reset', (info) => same<typeof info, ResetInfo>(true)),
  client.on('error', (err) => {
    if (err instanceof AgentwireError) {
      assertType<string>(err.code);
      assertType<ServerMessage | undefined>(err.details);
      if (err.code === 'too_many_runs' || err.code === 'not_connected') return;
    }
    assertType<string>(err.message);
  }),
  client.on('status', (status) => same<typeof status, ConnectionStatus>(true)),
  client.on('event', (event) => {
    same<typeof event, AgentwireEvent>(true);
    assertType<number>(event.seq);
    assertType<string>(event.epoch + event.event_id + event.user_id + event.type);
    assertType<number>(event.timestamp);
    assertType<string | undefined>(event.run_id ?? event.thread_id);
    assertType<unknown>(event.anything_the_publisher_sent);
  }),
  client.on('message', (message) => assertType<string | undefined>(message.type)),
  client.on('refresh', (info) => {
    same<typeof info, RefreshInfo>(true);
    assertType<number>(info.expiresAt + info.ack.expires_at);
  }),
  client.on('agent_started', (ev) => assertType<string>(ev.agent_name + ev.run_id + ev.thread_id)),
  client.on('agent_thinking', (ev) => assertType<string>(ev.reasoning)),
  client.on('tool_executing', (ev) => assertType<string>(ev.tool_name + Object.keys(ev.parameters).join())),
  client.on('tool_completed', (ev) => {
    assertType<number>(ev.duration);
    assertType<unknown>(ev.results);
  }),
  client.on('agent_completed', (ev) => {
    same<typeof ev, AgentCompletedEvent>(true);
    same<typeof ev.status, 'success' | 'error' | 'cancelled' | 'timeout'>(true);
    assertType<string>(ev.final_response);
  }),
  // Any other name is an event type.
  client.on('partial_result', (ev) => {
    same<typeof ev, AgentwireEvent>(true);
    if (typeof ev.content === 'string') assertType<string>(ev.content);
  }),
  // onEvent: event types only, even one named like a lifecycle notification.
  client.onEvent('open', (ev) => same<typeof ev, AgentwireEvent>(true)),
  client.onEvent('agent_completed', (ev) => same<typeof ev, AgentCompletedEvent>(true)),
];
const onStatus = (status: ConnectionStatus) => void status;
client.on('status', onStatus);
client.off('status', onStatus);
for (const off of offs) off();
const anyType: string = 'custom_event';
client.on(anyType, (ev) => same<typeof ev, AgentwireEvent>(true));

// --------------------------------------------------------------- requests
async function main(): Promise<void> {
  const hello = await client.connect();
  same<typeof hello, ConnectionEstablished>(true);
  assertType<number>(hello.heartbeat_interval_ms + hello.max_message_bytes + hello.server_time);
  assertType<boolean>(hello.resumed);

  const run = await client.startAgent({ userRequest: 'What is 6*7?' });
  same<typeof run, StartAgentAck>(true);
  assertType<'start_agent'>(run.for);
  await client.startAgent({ userRequest: 'again', threadId: run.thread_id, context: { page: 1 }, settings: {} });

  const sent = await client.sendMessage({ content: 'hello', threadId: run.thread_id, references: ['doc-1'] });
  same<typeof sent, SendMessageAck>(true);
  await client.sendMessage({ content: 'no thread' });

  const stopped = await client.stopAgent(run.run_id);
  same<typeof stopped, StopAgentAck>(true);

  const pong = await client.ping();
  same<typeof pong, PingResult>(true);
  assertType<number>(pong.rttMs + pong.server_time);
  await client.ping({ timeoutMs: 1000 });

  const refreshed = await client.refresh();
  same<typeof refreshed, RefreshAck>(true);

  const reply = await client.request('heartbeat');
  same<typeof reply, ServerMessage>(true);
  interface ResumeAck extends ServerMessage {
    type: 'ack';
    for: 'resume';
    resumed: boolean;
  }
  const resumed = await client.request<ResumeAck>('resume', { since: 3, epoch: hello.epoch }, { timeoutMs: 5000 });
  assertType<boolean>(resumed.resumed);

  try {
    await client.request('start_agent', { user_request: 'x' });
  } catch (err) {
    if (err instanceof AgentwireError && err.code === 'timeout') return;
  }
  await client.close();
  await browserClient.close();
}
void main;

// ---------------------------------------------------------------- helpers
const error = new AgentwireError('timeout', 'no reply', { type: 'error', code: 'timeout' });
assertType<Error>(error);
assertType<'AgentwireError'>(error.name);
new AgentwireError('not_connected', 'not connected');
assertType<string>(base64url('héllo'));
const claims = decodeJwt('a.b.c');
same<typeof claims, JwtClaims | null>(true);
if (claims && typeof claims.exp === 'number') assertType<number>(claims.exp * 1000);
