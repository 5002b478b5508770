/**
 * Local servers on 127.0.0.1 that stand for answers the real gateway gives rarely or never on
 * demand (store down, a proxy in front answering for it, a dead or silent socket), and for the
 * upstream API behind the gateway's reverse proxy. The statuses the real gateway produces on
 * demand (401, 403, 413) are tested against it.
 */

import { createServer as createHttpServer, type IncomingHttpHeaders, type Server } from "node:http";
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from "node:net";

/** What a canned server saw of one request. */
export interface SeenRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/**
 * A loopback server that tracks its connections, so that `close` ends them all instead of
 * waiting for clients that keep them alive.
 */
abstract class LoopbackServer {
  private readonly sockets = new Set<Socket>();

  protected constructor(private readonly server: Server | TcpServer) {
    this.server.on("connection", (socket: Socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
      socket.on("error", () => undefined);
    });
  }

  /** Starts listening; returns the base URL. */
  start(): Promise<string> {
    return new Promise((done) => {
      this.server.listen(0, "127.0.0.1", () => {
        const address = this.server.address();
        done(`http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`);
      });
    });
  }

  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((done) => this.server.close(() => done()));
  }
}

/** An HTTP server that answers every request with one status, body and headers. */
export class CannedAnswer extends LoopbackServer {
  readonly seen: SeenRequest[];

  constructor(status: number, body: unknown, headers: Record<string, string> = {}) {
    const payload = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    const seen: SeenRequest[] = [];
    super(
      createHttpServer((request, response) => {
        const chunks: Buffer[] = [];
        request.on("data", (chunk: Buffer) => chunks.push(chunk));
        request.on("end", () => {
          seen.push({
            method: request.method ?? "",
            path: request.url ?? "",
            headers: request.headers,
            body: Buffer.concat(chunks).toString("utf8"),
          });
          response.writeHead(status, {
            "Content-Type": "application/json",
            "Content-Length": String(payload.length),
            ...headers,
          });
          response.end(payload);
        });
      }),
    );
    this.seen = seen;
  }
}

/**
 * A TCP server that accepts connections and then does `behaviour` with them: `silent` never
 * answers; `broken` sends the head of an answer with a body it never finishes, then hangs up.
 */
export class RawServer extends LoopbackServer {
  constructor(behaviour: "silent" | "broken") {
    super(
      createTcpServer((socket) => {
        if (behaviour === "broken") {
          socket.once("data", () => {
            socket.write(
              'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{"allowed": true,',
            );
            setTimeout(() => socket.destroy(), 20);
          });
        }
      }),
    );
  }
}

/** A loopback URL where nothing listens (a port that was free a moment ago). */
export async function deadUrl(): Promise<string> {
  const probe = createTcpServer();
  await new Promise<void>((done) => probe.listen(0, "127.0.0.1", () => done()));
  const address = probe.address();
  const port = typeof address === "object" && address ? address.port : 0;
  await new Promise<void>((done) => probe.close(() => done()));
  return `http://127.0.0.1:${port}`;
}
