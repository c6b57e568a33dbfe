// A real SMTP server (the `smtp-server` package) for Tollgate's end-to-end
// tests, on a free loopback port, without TLS. It prints `smtp <port>` once
// it listens, then `mail <json>` for each message it accepts
// ({"from", "to", "user", "data"}), and stops when its standard input closes.
//
// SMTP_CONFIG (JSON): {"username"?, "password"?, "reject"?: ["address", ...]}
// With a username, mail is accepted only after AUTH with those credentials;
// recipients in `reject` are refused with 550.

import { SMTPServer } from 'smtp-server';

const config = JSON.parse(process.env.SMTP_CONFIG || '{}');
const reject = new Set(config.reject || []);

const server = new SMTPServer({
  secure: false,
  disabledCommands: ['STARTTLS'],
  authOptional: !config.username,
  allowInsecureAuth: true,
  logger: false,
  onAuth(auth, session, callback) {
    if (auth.username === config.username && auth.password === config.password) {
      callback(null, { user: auth.username });
    } else {
      callback(new Error('invalid credentials'));
    }
  },
  onRcptTo(address, session, callback) {
    if (reject.has(address.address)) {
      const error = new Error('no such mailbox');
      error.responseCode = 550;
      callback(error);
      return;
    }
    callback();
  },
  onData(stream, session, callback) {
    const chunks = [];
    stream.on('data', (chunk) => chunks.push(chunk));
    stream.on('end', () => {
      const mail = {
        from: session.envelope.mailFrom && session.envelope.mailFrom.address,
        to: session.envelope.rcptTo.map((r) => r.address),
        user: session.user || null,
        data: Buffer.concat(chunks).toString('utf8'),
      };
      process.stdout.write(`mail ${JSON.stringify(mail)}\n`);
      callback();
    });
  },
});

server.listen(0, '127.0.0.1', () => process.stdout.write(`smtp ${server.server.address().port}\n`));
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
