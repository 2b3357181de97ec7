#!/usr/bin/env node
// A minimal meeting bot in Node.js that runs audio-sidecar as its child process.
//
// No dependencies. Node cannot create a socketpair directly, but it does not
// need to: every extra 'pipe' entry in child_process.spawn's `stdio` array is
// a connected Unix stream socketpair (libuv uses socketpair(2) for them), and
// the child inherits its end at that index. So the sidecar gets audio-in as
// fd 3 and audio-out as fd 4, and the bot holds the other ends as
// child.stdio[3] and child.stdio[4].
//
// The bot streams a tone as 20 ms AudioSocket frames in real time, ends the
// stream with a terminate frame, reads the sidecar's JSON-lines events from
// its stdout, reads back the bot output from audio-out, and exits cleanly by
// closing the sidecar's stdin (--exit-on-stdin-eof).
//
// It also talks to the sidecar over its control channel, `--control PATH`: a
// Unix socket that carries every event line (as stdout does) one way and the
// bot's commands, one JSON object per line, the other. That is how a bot in
// another container of a pod reaches the sidecar; this one spawns it, and
// uses the socket to show the exchange: a `send` (a message for the server,
// as is) and a `say`, which the attendee dialect answers `unsupported`.
//
//   audio-sidecar serve --echo &          # listens on ws://127.0.0.1:8765/
//   node examples/node_bot/bot.js --url ws://127.0.0.1:8765/
//
// SIDECAR_CMD sets how the sidecar is started (default: "python3 -m sidecar");
// use e.g. SIDECAR_CMD=audio-sidecar or SIDECAR_CMD=".venv/bin/python -m sidecar".

'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const RATE = 48000;
const FRAME_MS = 20;
const FRAME_SAMPLES = (RATE * FRAME_MS) / 1000;
// AudioSocket: 1-byte kind, 2-byte big-endian payload length, payload.
const KIND_TERMINATE = 0x00;
const KIND_AUDIO_48K = 0x16;
const KIND_ERROR = 0xff;

function parseArgs(argv) {
  const args = { url: process.env.SIDECAR_URL, seconds: 3, freq: 440 };
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (flag === '--url') args.url = value;
    else if (flag === '--seconds') args.seconds = Number(value);
    else if (flag === '--freq') args.freq = Number(value);
    else {
      console.error(`bot: unknown argument ${flag}`);
      process.exit(2);
    }
    i += 1;
  }
  if (!args.url) {
    console.error('bot: give --url or set SIDECAR_URL');
    process.exit(2);
  }
  return args;
}

function frame(kind, payload = Buffer.alloc(0)) {
  const header = Buffer.alloc(3);
  header.writeUInt8(kind, 0);
  header.writeUInt16BE(payload.length, 1);
  return Buffer.concat([header, payload]);
}

function tone(freq, seconds, level = 0.3) {
  const n = Math.round(seconds * RATE);
  const pcm = Buffer.alloc(n * 2);
  for (let i = 0; i < n; i += 1) {
    pcm.writeInt16LE(Math.round(level * 32767 * Math.sin((2 * Math.PI * freq * i) / RATE)), i * 2);
  }
  return pcm;
}

// Parses AudioSocket frames from audio-out, however the stream is split.
class Speaker {
  constructor(socket) {
    this.buffer = Buffer.alloc(0);
    this.samples = 0;
    this.frames = 0;
    this.lastFrameAt = 0;
    this.errors = [];
    socket.on('data', (data) => this.feed(data));
    socket.on('error', () => {});
  }

  feed(data) {
    this.buffer = Buffer.concat([this.buffer, data]);
    while (this.buffer.length >= 3) {
      const kind = this.buffer.readUInt8(0);
      const length = this.buffer.readUInt16BE(1);
      if (this.buffer.length < 3 + length) break;
      const payload = this.buffer.subarray(3, 3 + length);
      this.buffer = this.buffer.subarray(3 + length);
      if (kind >= 0x10 && kind <= 0x18) {
        // A real bot would hand `payload` (s16le mono) to the meeting here.
        this.samples += length / 2;
        this.frames += 1;
        this.lastFrameAt = Date.now();
      } else if (kind === KIND_ERROR) {
        this.errors.push(payload.subarray(1).toString('utf8'));
      }
    }
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

// The control channel: connect to the socket, log every event line that comes
// on it, and write commands. Each command gets exactly one `command_result`
// event, which echoes its `id`.
class Control {
  constructor(socketPath) {
    this.socketPath = socketPath;
    this.results = new Map();
    this.socket = null;
  }

  // The sidecar creates the socket before its `ready` event; retry briefly anyway.
  async connect(timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        this.socket = await new Promise((resolve, reject) => {
          const socket = net.connect(this.socketPath);
          socket.once('connect', () => resolve(socket));
          socket.once('error', reject);
        });
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(50);
      }
    }
    this.socket.on('error', () => {});
    readline.createInterface({ input: this.socket }).on('line', (line) => {
      const event = JSON.parse(line);
      if (event.event === 'command_result') {
        const outcome = event.ok ? 'ok' : `${event.error.code}: ${event.error.message}`;
        console.log(`bot: control: ${event.command} (${event.id}) answered ${outcome}`);
        const waiter = this.results.get(event.id);
        if (waiter) waiter(event);
      } else if (event.event !== 'stats') {
        console.log(`bot: control event ${event.event}`);
      }
    });
  }

  // Sends one command; resolves with its answer (or, should the sidecar be
  // gone, with a failure of our own after a few seconds).
  send(command, id, fields = {}) {
    const answered = new Promise((resolve) => this.results.set(id, resolve));
    this.socket.write(`${JSON.stringify({ command, id, ...fields })}\n`);
    const noAnswer = { ok: false, error: { code: 'no_answer', message: 'no command_result in 5 s' } };
    return Promise.race([answered, sleep(5000).then(() => noAnswer)]);
  }

  close() {
    if (this.socket) this.socket.end();
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const [command, ...prefix] = (process.env.SIDECAR_CMD || 'python3 -m sidecar')
    .split(/\s+/)
    .filter(Boolean);
  // The control socket's directory: ours alone (mkdtemp makes it 0700).
  const controlDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sidecar-'));
  const control = new Control(path.join(controlDir, 'control.sock'));
  const sidecar = spawn(
    command,
    [
      ...prefix,
      'run',
      '--url', args.url,
      '--audio-in-fd', '3',
      '--audio-out-fd', '4',
      '--control', control.socketPath,
      '--exit-on-stdin-eof',
      '--stats-interval', '1',
    ],
    { stdio: ['pipe', 'pipe', 'inherit', 'pipe', 'pipe'] },
  );
  const mic = sidecar.stdio[3];
  const speaker = new Speaker(sidecar.stdio[4]);
  mic.on('error', () => {});

  let connected;
  const isConnected = new Promise((resolve) => { connected = resolve; });
  let lastStats = {};
  const exited = new Promise((resolve) => sidecar.on('exit', (code) => resolve(code)));
  sidecar.on('error', (err) => {
    console.error(`bot: cannot start the sidecar (${command}): ${err.message}`);
    process.exit(1);
  });
  const events = readline.createInterface({ input: sidecar.stdout });
  const eventsDone = new Promise((resolve) => events.on('close', resolve));
  events.on('line', (line) => {
    const event = JSON.parse(line);
    if (event.event === 'stats') lastStats = event;
    else console.log(`bot: sidecar event ${event.event}: ${line}`);
    if (event.event === 'connected') connected();
  });

  const timeout = sleep(20000).then(() => 'timeout');
  if ((await Promise.race([isConnected, timeout, exited])) !== undefined) {
    console.error('bot: the sidecar did not connect to the server');
    sidecar.kill();
    process.exit(1);
  }

  await control.connect();
  // `send` puts any JSON object on the websocket as is: here, for the server.
  const hello = { trigger: 'bot.hello', data: { bot: 'node_bot' } };
  const sent = await control.send('send', 'hello-1', { message: hello });
  // The attendee dialect has no agent to speak: answered `unsupported`.
  const said = await control.send('say', 'say-1', { text: 'Hello, meeting.' });

  const pcm = tone(args.freq, args.seconds);
  const step = FRAME_SAMPLES * 2;
  const start = Date.now();
  for (let n = 0, offset = 0; offset < pcm.length; n += 1, offset += step) {
    // An absolute schedule: timer lateness never accumulates.
    await sleep(start + n * FRAME_MS - Date.now());
    mic.write(frame(KIND_AUDIO_48K, pcm.subarray(offset, offset + step)));
  }
  mic.write(frame(KIND_TERMINATE));
  console.log(`bot: sent ${args.seconds} s of a ${args.freq} Hz tone`);

  // Let the server's answer finish: wait until audio-out has been quiet for a while.
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    await sleep(100);
    if (speaker.frames && Date.now() - speaker.lastFrameAt > 500) break;
  }

  control.close();
  sidecar.stdin.end();
  const code = await exited;
  await eventsDone; // the last lines (final stats, stopped) may still be in the pipe
  fs.rmSync(controlDir, { recursive: true, force: true });
  mic.destroy();
  sidecar.stdio[4].destroy();
  for (const error of speaker.errors) {
    console.error(`bot: the sidecar reported an error on audio-out: ${error}`);
  }
  console.log(
    `bot: sidecar stats: ${lastStats.messages_out} messages out, ${lastStats.messages_in} in, ` +
      `dropped ${JSON.stringify(lastStats.dropped)}`,
  );
  console.log(
    `bot: commands: send ${sent.ok ? 'ok' : sent.error.code}, say ${said.ok ? 'ok' : said.error.code}`,
  );
  console.log(
    `done: sent ${pcm.length / 2} samples, received ${speaker.samples} samples of bot output, ` +
      `sidecar exited with ${code}`,
  );
  process.exit(code === 0 ? 0 : 1);
}

main();
