/**
 * The gateway server: accepts client connections on one TCP port (text, binary and HTTP sniffed
 * from the first bytes), owns the hub and the plugin registry, serves the admin HTTP port, sweeps
 * idle connections, and shuts down gracefully (reconnect push, drain, deadline).
 *
 * What a hostile client can make it hold is bounded here too (docs/operations.md, "Limits and
 * abuse"): connections, client and HTTP on both ports together, up to MAX_CONNECTIONS (derived
 * from the descriptor limit by default); running out of descriptors backs off instead of
 * crashing; HTTP requests are timed (headers, request, keep-alive) on both ports and closed on
 * shutdown; the sweep enforces the frame timeout and token expiry besides idle and hello.
 */
import { BulkGate } from './bulk-gate';
import type { Server as HttpServer } from 'node:http';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { MemoryBus, type Bus } from '../bus';
import { createAdminHandler, createTimedHttpServer, type AdminEndpoints, type AdminHandler } from '../admin';
import { bulkReplyBytes, FlagStore, type Config, type FeatureFlags } from '../control';
import { DisconnectReason, ErrorCode, type WelcomeLimits } from '../protocol';
import {
  Counters,
  GatewayMetrics,
  Limit,
  PerformanceMonitor,
  RejectReason,
  StatsSampler,
  memoryThresholdBytes,
  safeRssBytes,
  silentLogger,
  type Logger,
} from '../telemetry';
import { Connection, type ConnectionHost } from './connection';
import { ADMIN_RESERVE, API_RESERVE, effectiveMaxConnections } from './descriptors';
import { EvictionQueue } from './eviction';
import { TokenBucket } from './token-bucket';
import type { Inbound, InboundLimits } from './inbound';
import type { OutboundLimits } from './outbound-queue';
import { SessionState, type SessionLimits } from './session';
import { Hub } from './hub';
import { PluginRegistry, type GatewayServices, type MessageProcessor } from './plugins';

export interface GatewayOptions {
  config: Config;
  /** @default a MemoryBus (embedded mode) */
  bus?: Bus;
  /** Processors to register, in order. @default none (the standalone role passes the built-ins) */
  plugins?: readonly MessageProcessor[];
  /** @default silent */
  log?: Logger;
  /** Shown in /stats. @default 'standalone' */
  role?: string;
  /**
   * Feature flags: what gated plugins and compression check, what welcome announces, the
   * feature_enabled metric and /stats `flags_shed`. The roles pass the FlagStore that startFlags
   * then feeds. @default an empty FlagStore (no flags: every feature on)
   */
  flags?: FeatureFlags;
  /** Readiness checks besides listening, draining, the bus and overload: a reason, or null. */
  readiness?: readonly ReadinessCheck[];
  /** Fields added to /stats (and the gRPC WatchStats). */
  stats?: readonly StatsContributor[];
}

/** Why the process is not ready, or null when this check is fine. */
export type ReadinessCheck = () => string | null;
/** Fields for /stats. */
export type StatsContributor = () => Record<string, unknown>;

export interface ListeningAddresses {
  host: string;
  port: number;
  adminPort: number | null;
}

export function defaultServerId(): string {
  return `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
}

/** First pause after accept(2) failed for lack of descriptors; doubles up to ACCEPT_BACKOFF_MAX_MS. */
const ACCEPT_BACKOFF_MIN_MS = 100;
const ACCEPT_BACKOFF_MAX_MS = 5000;
/** How often the pending output of all connections is held against OUTBOUND_BUDGET_BYTES. */
const OUTBOUND_CHECK_MS = 100;
/** At most one log line per this long about refused connections (and about the outbound budget). */
const REFUSAL_LOG_MS = 10_000;

/** History usage of a bus that keeps none in this process (the Redis bus keeps it in Redis). */
const NO_HISTORY = { bytes: 0, evicted: 0 } as const;

export class GatewayServer implements ConnectionHost {
  readonly services: GatewayServices;
  readonly plugins = new PluginRegistry();
  readonly welcomeLimits: WelcomeLimits;
  readonly sessionLimits: SessionLimits;
  readonly bulkGate: BulkGate;
  readonly inboundLimits: InboundLimits;
  readonly outboundLimits: OutboundLimits;
  readonly counters = new Counters();
  readonly stats: StatsSampler;
  readonly role: string;
  private readonly tcp: Server;
  private readonly sniffedHttp: HttpServer;
  private admin: HttpServer | null = null;
  private readonly conns = new Set<Connection>();
  /** HTTP connections of both ports (they count against MAX_CONNECTIONS). */
  private readonly httpSockets = new Set<Socket>();
  /** Of those, the ones sniffed on the client port: a drain waits for them, not for admin probes. */
  private clientHttp = 0;
  /**
   * What may be closed to admit a newcomer when a port is full (eviction.ts): client connections
   * before hello, idle HTTP connections of the client and admin ports.
   */
  private readonly evictable = new EvictionQueue<Connection | Socket>((t) =>
    t instanceof Connection ? !t.socket.destroyed && t.session.state <= SessionState.AwaitingHello : !t.destroyed,
  );
  /** MAX_CONNECTIONS as applied (see effectiveMaxConnections); 0: no limit. */
  readonly maxConnections: number;
  /** Connections paused until partial frames elsewhere free PARTIAL_FRAMES_BUDGET_BYTES. */
  private readonly budgetWaiters = new Set<Inbound>();
  /** Accepting is paused until then (ms) after running out of descriptors. */
  private acceptBackoffUntil = 0;
  private acceptBackoffMs = ACCEPT_BACKOFF_MIN_MS;
  private lastRefusalLog = 0;
  private lastBudgetLog = 0;
  /** Connections cut by the outbound budget since the last log line about it. */
  private budgetCuts = 0;
  private sessionSeq = 0;
  private sweepTimer: NodeJS.Timeout | null = null;
  private budgetTimer: NodeJS.Timeout | null = null;
  /** Connections whose output piled up in their socket since the last budget check. */
  private readonly backlogged = new Set<Connection>();
  private listening = false;
  private draining = false;
  private drained: (() => void) | null = null;
  private readonly readinessChecks: ReadinessCheck[];
  private readonly statsExtras: StatsContributor[];
  private readonly flags: FeatureFlags;
  /** Overload detection; subscribe with monitor.on('overloaded' | 'recovered'). */
  readonly monitor: PerformanceMonitor;
  readonly metrics: GatewayMetrics;
  /** Sessions open when the current overload began. */
  private overloadOnset = 0;

  constructor(opts: GatewayOptions) {
    const config = opts.config;
    const bus = opts.bus ?? new MemoryBus({ historySize: config.historySize, historyRoomBytes: config.historyRoomBytes, historyTotalBytes: config.historyTotalBytes });
    const serverId = config.serverId || defaultServerId();
    const log = (opts.log ?? silentLogger).child({ server: serverId });
    this.role = opts.role ?? 'standalone';
    this.flags = opts.flags ?? new FlagStore();
    const hub = new Hub(bus, this.counters);
    this.services = { serverId, config, bus, hub, counters: this.counters, log };
    for (const p of opts.plugins ?? []) this.plugins.register(p);
    this.welcomeLimits = {
      maxFrameBytes: config.maxFrameBytes,
      maxRooms: config.maxRoomsPerConnection,
      rateLimitPerSec: config.rateLimitPerSec,
      idleTimeoutMs: config.idleTimeoutMs,
    };
    this.bulkGate = new BulkGate(config.replyTotalBytesPerSec, bulkReplyBytes(config), () => this.counters.limitHits[Limit.ReplyTotal]++);
    this.sessionLimits = {
      authSecret: config.authSecret,
      authRequireExp: config.authRequireExp,
      maxRoomsPerConnection: config.maxRoomsPerConnection,
      maxRoomsTotal: config.maxRoomsTotal,
      maxConnectionsPerUser: config.maxConnectionsPerUser,
      compressionCodecs: config.compressionCodecs,
      slowConsumerPolicy: config.slowConsumerPolicy,
    };
    this.inboundLimits = {
      maxFrameBytes: config.maxFrameBytes,
      maxJsonDepth: config.maxJsonDepth,
      rateLimitPerSec: config.rateLimitPerSec,
      rateLimitBurst: config.rateLimitBurst,
      partialFramesBudgetBytes: config.partialFramesBudgetBytes,
      inflateBytesPerSec: config.inflateBytesPerSec,
      // Burst: an eighth of a second's worth (at least one largest frame), so that what completes
      // together, and is parsed in one turn, stays small.
      inflateTotal:
        config.inflateTotalBytesPerSec > 0 ? new TokenBucket(config.inflateTotalBytesPerSec, Math.max(config.maxFrameBytes, config.inflateTotalBytesPerSec / 8), Date.now()) : null,
      inboundBytesPerSec: config.inboundBytesPerSec,
    };
    this.outboundLimits = {
      maxOutboundBytes: config.maxOutboundBytes,
      slowConsumerPolicy: config.slowConsumerPolicy,
      compressionThreshold: config.compressionThreshold,
    };
    this.stats = new StatsSampler(this.counters);
    this.maxConnections = effectiveMaxConnections(config.maxConnections);
    this.tcp = createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.tcp.on('error', (err) => this.listenerError(err as NodeJS.ErrnoException));
    const endpoints: AdminEndpoints = {
      stats: () => this.statsSnapshot(),
      readiness: () => this.readiness(),
      metrics: () => this.metrics.expose(),
    };
    const adminHandler = createAdminHandler(endpoints);
    // /metrics tells an attacker a lot (connections, rooms, errors): admin port only by default.
    const clientHandler = config.metricsOnClientPort ? adminHandler : createAdminHandler({ ...endpoints, metrics: undefined });
    this.sniffedHttp = this.httpServer(clientHandler, false);
    if (config.adminPort >= 0) this.admin = this.httpServer(adminHandler, true);

    this.monitor = new PerformanceMonitor(this.counters, {
      p99LatencyMs: config.overloadP99LatencyMs,
      eventLoopLagMs: config.overloadEventLoopLagMs,
      memoryBytes: config.overloadMemoryPercent > 0 || config.overloadMemoryMb > 0 ? memoryThresholdBytes(config.overloadMemoryMb, config.overloadMemoryPercent) : 0,
      maxMsgPerSec: config.overloadMaxMsgPerSec,
      errorRatePercent: config.overloadErrorRatePercent,
      intervalMs: config.overloadIntervalMs,
      enterSamples: config.overloadEnterSamples,
      exitSamples: config.overloadExitSamples,
      recoveryPercent: config.overloadRecoveryPercent,
    });
    this.monitor.on('overloaded', (e) => {
      this.overloadOnset = this.conns.size;
      log.warn('overloaded: refusing new sessions beyond the margin, shedding non-critical work', { reasons: e.reasons, connections: this.conns.size });
    });
    this.monitor.on('recovered', () => log.info('recovered from overload'));
    const pending = bus as Bus & { readonly pending?: number };
    this.metrics = new GatewayMetrics({
      counters: this.counters,
      overloaded: () => this.monitor.overloaded,
      eventLoopLagSeconds: () => (this.monitor.latest?.eventLoopLagMs ?? 0) / 1000,
      streamPending: () => (typeof pending.pending === 'number' ? pending.pending : 0),
      features: () => this.flags.featureStates(),
      connectionsMax: () => this.maxConnections,
      rooms: () => this.services.hub.roomCount,
      history: () => (bus instanceof MemoryBus ? bus.usage : NO_HISTORY),
    });
    this.statsExtras = [
      () => this.monitor.statsFields(),
      () => ({
        connections_max: this.maxConnections,
        http_connections: this.counters.httpConnections,
        partial_frame_bytes: this.counters.partialFrameBytes,
        outbound_pending_bytes: this.counters.outboundPendingBytes,
        flags_shed: this.flags.isShedding,
      }),
      ...(opts.stats ?? []),
    ];
    this.readinessChecks = [() => (this.sessionRoomLeft() ? null : 'overloaded: refusing new sessions'), ...(opts.readiness ?? [])];
  }

  /** Whether one more session fits: always, unless overloaded past the connection margin. */
  private sessionRoomLeft(): boolean {
    return !this.monitor.overloaded || this.conns.size < this.overloadOnset + this.services.config.overloadConnectionMargin;
  }

  /** Called on hello by a connection already counted in conns. */
  admitSession(): boolean {
    return !this.monitor.overloaded || this.conns.size <= this.overloadOnset + this.services.config.overloadConnectionMargin;
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  /** Open connections of the gRPC API port (at most API_RESERVE: its own cap). */
  private apiSockets = 0;

  /**
   * Client connections and HTTP connections of all ports. MAX_CONNECTIONS bounds them less the
   * API's (which have their own reserve beyond it), the admin port's reserve comes on top.
   */
  get totalConnections(): number {
    return this.conns.size + this.httpSockets.size;
  }

  /** Whether a feature flag is on for a user (SessionHost: gated plugins, compression). */
  featureEnabled(flag: string, user: string): boolean {
    return this.flags.isEnabled(flag, user);
  }

  /** The flags announced in a user's welcome. */
  flagsFor(user: string): Record<string, boolean> {
    return this.flags.flagsFor(user);
  }

  /**
   * An HTTP server for one port (the admin module's timed server): timeouts counted, listener
   * errors handled like the client listener's, and admin sockets counted against MAX_CONNECTIONS.
   */
  private httpServer(handler: AdminHandler, admin: boolean): HttpServer {
    const cfg = this.services.config;
    const server = createTimedHttpServer(
      handler,
      { headersTimeoutMs: cfg.httpHeadersTimeoutMs, requestTimeoutMs: cfg.httpRequestTimeoutMs, keepAliveTimeoutMs: cfg.httpKeepAliveTimeoutMs },
      {
        onTimeout: () => this.counters.limitHits[Limit.HttpTimeout]++,
        onListenerError: (err) => this.listenerError(err),
        // An HTTP connection is a candidate for eviction only while no request of it is being answered.
        busy: (socket) => this.evictable.delete(socket),
        idle: (socket) => {
          if (this.httpSockets.has(socket)) this.evictable.add(socket);
        },
      },
    );
    if (admin) server.on('connection', (socket: Socket) => this.acceptAdmin(socket));
    return server;
  }

  private trackHttp(socket: Socket, clientPort: boolean, evictable: boolean): void {
    this.httpSockets.add(socket);
    this.counters.httpConnections = this.httpSockets.size;
    if (clientPort) this.clientHttp++;
    if (evictable) this.evictable.add(socket);
    socket.once('close', () => {
      this.evictable.delete(socket);
      this.httpSockets.delete(socket);
      this.counters.httpConnections = this.httpSockets.size;
      if (clientPort) this.clientHttp--;
      if (this.drained !== null && this.conns.size === 0 && this.clientHttp === 0) this.drained();
    });
  }

  /**
   * A connection to the gRPC API port (HTTP/2): counted with the connections of the other ports,
   * and admitted up to API_RESERVE beyond MAX_CONNECTIONS and the admin reserve (its listener
   * holds at most that many), so that neither a flood of sockets there takes the descriptors
   * client connections need nor a flood on the client port shuts the API out. False (and the
   * socket destroyed) when it is refused.
   */
  admitApiConnection(socket: Socket): boolean {
    const max = this.maxConnections;
    if (this.draining) {
      this.refuse(socket, RejectReason.Draining);
      return false;
    }
    if (max > 0 && this.totalConnections >= max + ADMIN_RESERVE + API_RESERVE) {
      this.refuse(socket, RejectReason.Limit);
      return false;
    }
    this.trackHttp(socket, false, false);
    this.apiSockets++;
    socket.once('close', () => this.apiSockets--);
    return true;
  }

  /** Admin port: counted like any connection, with a small reserve beyond the limit for probes. */
  private acceptAdmin(socket: Socket): void {
    const max = this.maxConnections;
    if (max > 0 && this.totalConnections - this.apiSockets >= max + ADMIN_RESERVE && !this.makeRoom()) {
      this.refuse(socket, RejectReason.Limit);
      return;
    }
    this.trackHttp(socket, false, true);
  }

  /**
   * The port is full: close the oldest connection that has proven nothing yet (eviction.ts), and
   * count it. Its descriptor is closed at once; it leaves the counts at its 'close' event.
   */
  private makeRoom(): boolean {
    if (!this.evictable.evictOldest()) return false;
    this.counters.rejected[RejectReason.Evicted]++;
    this.counters.limitHits[Limit.MaxConnections]++;
    return true;
  }

  private refuse(socket: Socket, reason: RejectReason): void {
    socket.destroy();
    this.counters.rejected[reason]++;
    if (reason === RejectReason.Limit) this.counters.limitHits[Limit.MaxConnections]++;
    const now = Date.now();
    if (reason !== RejectReason.Draining && now - this.lastRefusalLog >= REFUSAL_LOG_MS) {
      this.lastRefusalLog = now;
      this.services.log.warn('refusing connections', { reason, connections: this.conns.size, http: this.httpSockets.size, max: this.maxConnections });
    }
  }

  /**
   * A listener error. accept(2) failing with EMFILE/ENFILE means the process (or the system) is
   * out of descriptors: libuv has already dropped the pending connection; refuse new ones for a
   * while (doubling up to 5 s) so that the sessions already open keep the descriptors they need.
   */
  private listenerError(err: NodeJS.ErrnoException): void {
    if (err.code === 'EMFILE' || err.code === 'ENFILE' || err.syscall === 'accept') {
      this.counters.rejected[RejectReason.AcceptError]++;
      const now = Date.now();
      if (now >= this.acceptBackoffUntil) {
        this.acceptBackoffUntil = now + this.acceptBackoffMs;
        this.acceptBackoffMs = Math.min(ACCEPT_BACKOFF_MAX_MS, this.acceptBackoffMs * 2);
      }
      if (now - this.lastRefusalLog >= REFUSAL_LOG_MS) {
        this.lastRefusalLog = now;
        this.services.log.warn('accept failed: out of file descriptors, backing off', { code: err.code, backoffMs: this.acceptBackoffUntil - now, connections: this.conns.size, http: this.httpSockets.size });
      }
      return;
    }
    this.services.log.error('listener error', { err });
  }

  /** A connection's inbound side: over the partial-frame budget, paused; resumed by partialBudgetFreed. */
  waitForPartialBudget(inbound: Inbound): void {
    this.budgetWaiters.add(inbound);
  }

  /**
   * PARTIAL_FRAMES_BUDGET_BYTES and a quarter are past (inbound.ts, trackPartial): refuse the
   * largest partial frames held, of any connection, until the total is back within that bound. Largest first: an attacker's frames held at the bound must
   * not make an ordinary frame that spans two reads the one refused.
   */
  partialOverflow(current: Inbound): void {
    const budget = this.services.config.partialFramesBudgetBytes;
    const hard = budget + budget / 4;
    // A scan of every connection, but only past the hard bound, which only an attack reaches.
    for (let guard = 8; guard > 0 && this.counters.partialFrameBytes > hard; guard--) {
      let victim: Inbound = current;
      for (const conn of this.conns) if (conn.inbound.heldPartialBytes > victim.heldPartialBytes) victim = conn.inbound;
      if (victim.heldPartialBytes === 0) return;
      this.budgetWaiters.delete(victim);
      victim.refuseOverflow(budget);
    }
  }

  partialBudgetFreed(): void {
    if (this.budgetWaiters.size === 0) return;
    const budget = this.services.config.partialFramesBudgetBytes;
    if (budget > 0 && this.counters.partialFrameBytes > budget) return;
    const waiting = [...this.budgetWaiters];
    this.budgetWaiters.clear();
    for (const inbound of waiting) inbound.budgetResume();
  }

  get isDraining(): boolean {
    return this.draining;
  }

  async start(): Promise<ListeningAddresses> {
    const { config, bus, hub, log } = this.services;
    await bus.start(hub);
    await new Promise<void>((resolve, reject) => {
      this.tcp.once('error', reject);
      this.tcp.listen({ host: config.tcpHost, port: config.tcpPort, backlog: 4096 }, () => {
        this.tcp.removeListener('error', reject);
        resolve();
      });
    });
    if (this.admin !== null) {
      const admin = this.admin;
      await new Promise<void>((resolve, reject) => {
        admin.once('error', reject);
        admin.listen({ host: config.adminHost, port: config.adminPort }, () => {
          admin.removeListener('error', reject);
          resolve();
        });
      });
    }
    // The sniffed HTTP server never listens itself, and Node sets up the tracking that enforces
    // headersTimeout/requestTimeout (and closeAllConnections) on 'listening': without this, an
    // HTTP request on the client port was never timed out.
    this.sniffedHttp.emit('listening');
    this.listening = true;
    this.stats.start();
    this.monitor.start();
    const sweepMs = Math.max(50, Math.min(1000, Math.floor(Math.min(config.idleTimeoutMs, config.helloTimeoutMs, config.frameTimeoutMs) / 4)));
    this.sweepTimer = setInterval(() => this.sweep(), sweepMs);
    this.sweepTimer.unref();
    if (config.outboundBudgetBytes > 0) {
      this.budgetTimer = setInterval(() => this.checkOutboundBudget(), OUTBOUND_CHECK_MS);
      this.budgetTimer.unref();
    }
    const addr = this.addresses();
    log.info('listening', { role: this.role, bus: bus.kind, ...addr });
    return addr;
  }

  addresses(): ListeningAddresses {
    const a = this.tcp.address() as AddressInfo;
    const admin = this.admin?.address() as AddressInfo | null | undefined;
    return { host: a.address, port: a.port, adminPort: admin ? admin.port : null };
  }

  private accept(socket: Socket): void {
    if (this.draining) return this.refuse(socket, RejectReason.Draining);
    // The backoff first: a newcomer refused anyway must not cost an older connection its place.
    if (this.acceptBackoffUntil !== 0) {
      if (Date.now() < this.acceptBackoffUntil) return this.refuse(socket, RejectReason.Backoff);
      this.acceptBackoffUntil = 0;
      this.acceptBackoffMs = ACCEPT_BACKOFF_MIN_MS;
    }
    const max = this.maxConnections;
    if (max > 0 && this.totalConnections - this.apiSockets >= max && !this.makeRoom()) return this.refuse(socket, RejectReason.Limit);
    const conn = new Connection(socket, this, Date.now());
    this.conns.add(conn);
    this.evictable.add(conn);
    this.counters.connections++;
    this.counters.connectionsOpened++;
  }

  nextSessionId(): string {
    return `${this.services.serverId}:${(++this.sessionSeq).toString(36)}`;
  }

  handOverHttp(socket: Socket, firstBytes: Buffer): void {
    this.trackHttp(socket, true, true);
    socket.pause();
    socket.unshift(firstBytes);
    this.sniffedHttp.emit('connection', socket);
    socket.resume();
  }

  closed(conn: Connection): void {
    this.conns.delete(conn);
    this.evictable.delete(conn);
    this.backlogged.delete(conn);
    this.budgetWaiters.delete(conn.inbound);
    if (this.drained !== null && this.conns.size === 0 && this.clientHttp === 0) this.drained();
  }

  /**
   * Close connections that said nothing for too long, never said hello, hold a frame begun too
   * long ago (FRAME_TIMEOUT_MS), or whose token expired. Partial frames are not activity. A client
   * that messages were dropped for (SLOW_CONSUMER_POLICY=drop) and has caught up gets `position`.
   */
  private sweep(): void {
    const cfg = this.services.config;
    const hits = this.counters.limitHits;
    const now = Date.now();
    for (const conn of this.conns) {
      const { session, inbound } = conn;
      if (!session.live) continue;
      if (session.caughtUpAfterDrops) session.announceMissed();
      session.expireBulk(now);
      if (inbound.partialSince !== 0 && now - inbound.partialSince > cfg.frameTimeoutMs) {
        inbound.frameTimedOut(cfg.frameTimeoutMs);
      } else if (session.state <= SessionState.AwaitingHello && now - session.openedAt > cfg.helloTimeoutMs) {
        hits[Limit.HelloTimeout]++;
        // Still sniffing: nothing (or half a preamble) was sent, and there is no way to answer.
        if (session.state === SessionState.Sniffing) conn.destroy();
        else session.fail(undefined, ErrorCode.Unauthorized, `no hello within ${cfg.helloTimeoutMs} ms`);
      } else if (session.tokenExpiresAt !== 0 && now >= session.tokenExpiresAt) {
        session.tokenExpired();
      } else if (now - inbound.lastSeen > cfg.idleTimeoutMs && !inbound.heldByServer) {
        hits[Limit.IdleTimeout]++;
        session.disconnect(DisconnectReason.IdleTimeout);
      }
    }
  }

  /** ConnectionHost: a flush left bytes in this connection's socket. */
  outboundBacklogged(conn: Connection): void {
    if (this.budgetTimer !== null) this.backlogged.add(conn);
  }

  /**
   * OUTBOUND_BUDGET_BYTES: each connection's pending output is bounded by MAX_OUTBOUND_BYTES, but
   * thousands of clients that stop reading, each in a room of its own, would hold thousands of
   * times that. Output only stays pending in a socket whose peer does not take it (our own
   * queues are written every turn), so every OUTBOUND_CHECK_MS the pending output of the
   * connections a flush left backlogged is summed (a frame shared by N members counts N times:
   * an upper bound on the memory held); those that caught up leave the set. Past the budget the
   * connections furthest behind are disconnected as slow consumers, largest first, until the sum
   * is under three quarters of it. A client that reads has nothing pending and is never chosen.
   */
  private checkOutboundBudget(): void {
    let total = 0;
    const behind: { conn: Connection; pending: number }[] = [];
    for (const conn of this.backlogged) {
      const pending = conn.session.pendingOutput;
      if (pending === 0 || !conn.session.live) {
        this.backlogged.delete(conn);
        continue;
      }
      total += pending;
      behind.push({ conn, pending });
    }
    this.counters.outboundPendingBytes = total;
    const budget = this.services.config.outboundBudgetBytes;
    if (total <= budget) return;
    behind.sort((a, b) => b.pending - a.pending);
    const goal = Math.floor(budget * 0.75);
    let cut = 0;
    for (const { conn, pending } of behind) {
      if (total <= goal) break;
      this.backlogged.delete(conn);
      conn.session.outboundBudgetExceeded();
      total -= pending;
      cut++;
    }
    this.counters.outboundPendingBytes = total;
    this.budgetCuts += cut;
    const now = Date.now();
    if (now - this.lastBudgetLog >= REFUSAL_LOG_MS) {
      this.lastBudgetLog = now;
      this.services.log.warn('outbound budget spent: disconnected the clients furthest behind', { budget, disconnected: this.budgetCuts, pendingAfter: total });
      this.budgetCuts = 0;
    }
  }

  readiness(): { ready: boolean; reasons: string[] } {
    const reasons: string[] = [];
    if (!this.listening) reasons.push('not listening');
    if (this.draining) reasons.push('draining');
    if (!this.services.bus.ready) reasons.push(`${this.services.bus.kind} bus not connected or not answering`);
    for (const check of this.readinessChecks) {
      const r = check();
      if (r !== null) reasons.push(r);
    }
    return { ready: reasons.length === 0, reasons };
  }

  statsSnapshot(): Record<string, unknown> {
    const extra: Record<string, unknown> = {
      server: this.services.serverId,
      role: this.role,
      bus: this.services.bus.kind,
      rooms: this.services.hub.roomCount,
      ready: this.readiness().ready,
    };
    for (const f of this.statsExtras) Object.assign(extra, f());
    try {
      return this.stats.snapshot(extra);
    } catch (err) {
      // The RSS read opens /proc/self/stat, which fails when descriptors run out: answer with
      // what needs no descriptor rather than throw from an HTTP handler or a gRPC stream timer.
      const c = this.counters;
      return {
        memory_mb: Math.round(safeRssBytes() / 104857.6) / 10,
        connections: c.connections,
        messages_received_total: c.receivedTotal,
        messages_delivered_total: c.delivered,
        errors_total: c.errorsTotal,
        ...extra,
        degraded: (err as NodeJS.ErrnoException).code ?? String(err),
      };
    }
  }

  /**
   * Graceful shutdown: stop accepting, tell every client to reconnect elsewhere, let queued
   * frames drain until the deadline, then close whatever is left.
   */
  async shutdown(deadlineMs = this.services.config.shutdownDrainMs): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    const { log, bus } = this.services;
    log.info('shutting down', { connections: this.conns.size, http: this.httpSockets.size, deadlineMs });
    const closedListener = new Promise<void>((resolve) => this.tcp.close(() => resolve()));
    const allGone = new Promise<void>((resolve) => {
      this.drained = resolve;
      if (this.conns.size === 0 && this.clientHttp === 0) resolve();
    });
    for (const conn of this.conns) conn.session.disconnect(DisconnectReason.Shutdown, deadlineMs);
    // Idle keep-alive HTTP connections go now; requests in flight get until the deadline. The
    // admin port keeps answering (/readyz says draining) until the end.
    this.sniffedHttp.closeIdleConnections();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([allGone, new Promise<void>((resolve) => (timer = setTimeout(resolve, deadlineMs)))]);
    clearTimeout(timer);
    for (const conn of this.conns) conn.destroy();
    // Whatever HTTP is left (a request dribbled a byte at a time, a half-open socket) goes too:
    // the client listener's close waits for every socket it accepted, sniffed HTTP included.
    this.sniffedHttp.closeAllConnections();
    this.admin?.closeAllConnections();
    for (const socket of this.httpSockets) socket.destroy();
    await closedListener;
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    if (this.budgetTimer !== null) clearInterval(this.budgetTimer);
    this.stats.stop();
    this.monitor.stop();
    this.bulkGate.close();
    await new Promise<void>((resolve) => this.sniffedHttp.close(() => resolve()));
    if (this.admin !== null) {
      const admin = this.admin;
      await new Promise<void>((resolve) => admin.close(() => resolve()));
    }
    await bus.stop();
    this.listening = false;
    log.info('stopped');
  }
}
