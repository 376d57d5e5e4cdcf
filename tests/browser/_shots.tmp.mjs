import { startServer, launchBrowser, closeBrowser, openPage, signIn, ask, waitRunStatus, runSel, tid } from './lib.mjs';
const srv = await startServer({ dev: true });
const browser = await launchBrowser();
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const p = await openPage(ctx, srv);
  await p.locator(tid('signin-name')).waitFor();
  await p.screenshot({ path: '/tmp/shots/signin.png' });
  await signIn(p, 'alice');
  await p.screenshot({ path: '/tmp/shots/empty.png' });
  // a slow published run mid-way
  const ev = (type, f) => ({ user_id: 'alice', type, thread_id: 'tt', run_id: 'rr', ...f });
  await srv.publish(ev('agent_started', { agent_name: 'researcher' }));
  await srv.publish(ev('agent_thinking', { reasoning: 'I should look this up, then summarise.' }));
  await srv.publish(ev('tool_executing', { tool_name: 'search', parameters: { query: 'websocket resume', limit: 5 } }));
  await srv.publish(ev('tool_completed', { tool_name: 'search', results: [{ title: 'RFC 6455' }, { title: 'Centrifugo' }], duration: 420 }));
  await srv.publish(ev('partial_result', { content: 'Resuming means the client reconnects with ' }));
  await p.waitForTimeout(400);
  await p.screenshot({ path: '/tmp/shots/running.png' });
  const mob = await browser.newContext({ viewport: { width: 390, height: 800 }, colorScheme: 'dark', isMobile: true, hasTouch: true });
  const m = await openPage(mob, srv);
  await signIn(m, 'alice');
  const r = await ask(m, '2+3*4');
  await waitRunStatus(m, r, 'success');
  await m.screenshot({ path: '/tmp/shots/mobile-dark.png' });
  await m.locator('#sidebar-toggle').click();
  await m.waitForTimeout(300);
  await m.screenshot({ path: '/tmp/shots/mobile-drawer.png' });
  const d = await browser.newContext({ viewport: { width: 1280, height: 860 }, colorScheme: 'dark' });
  const dp = await openPage(d, srv);
  await signIn(dp, 'bob');
  const r2 = await ask(dp, 'the quick brown fox jumps over the lazy dog and the fox runs');
  await waitRunStatus(dp, r2, 'success');
  await dp.screenshot({ path: '/tmp/shots/dark.png' });
  console.log(p.errors, m.errors, dp.errors);
} finally {
  await closeBrowser(browser);
  await srv.stop();
}
