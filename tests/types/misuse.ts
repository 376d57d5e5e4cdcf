// Deliberate misuses of the client: tests/types/client.test.mjs asserts that
// tsc --strict rejects this file, with exactly the error marked on each line
// (`// error TSnnnn`) and no other. A declaration that grew too loose (an any,
// a missing overload check) makes one of these compile, and the test fail.
import WebSocket from 'ws';
import { AgentwireClient, decodeJwt, type AgentStartedEvent } from '../../clients/js/agentwire.js';

const client = new AgentwireClient({ token: 't', WebSocket });

new AgentwireClient({ url: 'ws://127.0.0.1:8080/ws', WebSocket }); // error TS2345
new AgentwireClient({ token: 42 }); // error TS2322
new AgentwireClient(); // error TS2554
new AgentwireClient({ token: 't', onReset: () => 'reload' }); // error TS2322
new AgentwireClient({ token: 't', getToken: () => 42 }); // error TS2322
new AgentwireClient({ token: 't', WebSocket: class {} }); // error TS2322
new AgentwireClient({ token: 't', backoffMaxMs: '30s' }); // error TS2322
new AgentwireClient({ token: 't', reconect: false }); // error TS2561
client.on('open', (info: AgentStartedEvent) => info.agent_name); // error TS2769
client.on('status', (status: number) => status); // error TS2769
client.on('agent_completed', (ev) => ev.status === 'done'); // error TS2367
client.on('tool_completed', (ev) => ev.duration.toUpperCase()); // error TS2339
client.onEvent('agent_started', (ev) => ev.agent_name.toFixed()); // error TS2551
client.startAgent({ user_request: 'what is 6*7?' }); // error TS2561
client.startAgent({}); // error TS2741
client.sendMessage({ text: 'hello' }); // error TS2353
client.stopAgent(42); // error TS2345
client.request('ping', 'not an object'); // error TS2345
client.close(1000); // error TS2554
client.ping().then((pong) => pong.rttMs.length); // error TS2339
const state: 'open' | 'closed' = client.status; // error TS2322
client.status = 'open'; // error TS2540
client.counters.reconnects = 0; // error TS2540
client.lastSeq.toFixed(); // error TS18047
decodeJwt('a.b.c').sub; // error TS2531
client.connect().then((hello) => hello.seq.startsWith('1')); // error TS2339
void state;
