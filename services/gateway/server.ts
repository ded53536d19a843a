/**
 * The gateway server: accepts client connections on one TCP port (text, binary and HTTP sniffed
 * from the first bytes), owns the hub and the plugin registry, serves the admin HTTP port, sweeps
 * idle connections, and shuts down gracefully (reconnect push, drain, deadline).
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { MemoryBus, type Bus } from '../bus';
import type { Config } from '../control';
import { DisconnectReason, ErrorCode, Mode, type WelcomeLimits } from '../protocol';
import { Counters, GatewayMetrics, PerformanceMonitor, StatsSampler, memoryThresholdBytes, silentLogger, type Logger } from '../telemetry';
import { Connection, type ConnectionHost } from './connection';
import { createHttpHandler, type HttpEndpoints } from './http';
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
}

export interface ListeningAddresses {
  host: string;
  port: number;
  adminPort: number | null;
}

export function defaultServerId(): string {
  return `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
}

export class GatewayServer implements ConnectionHost {
  readonly services: GatewayServices;
  readonly plugins = new PluginRegistry();
  readonly limits: WelcomeLimits;
  readonly counters = new Counters();
  readonly stats: StatsSampler;
  readonly role: string;
  private readonly tcp: Server;
  private readonly sniffedHttp: HttpServer;
  private admin: HttpServer | null = null;
  private readonly conns = new Set<Connection>();
  private sessionSeq = 0;
  private sweepTimer: NodeJS.Timeout | null = null;
  private listening = false;
  private draining = false;
  private drained: (() => void) | null = null;
  /** Extra readiness checks and /stats fields added by other modules (telemetry, overload). */
  readonly readinessChecks: (() => string | null)[] = [];
  readonly statsExtras: (() => Record<string, unknown>)[] = [];
  metricsHandler: HttpEndpoints['metrics'] = undefined;
  /** Overload detection; subscribe with monitor.on('overloaded' | 'recovered'). */
  readonly monitor: PerformanceMonitor;
  readonly metrics: GatewayMetrics;
  /** Sessions open when the current overload began. */
  private overloadOnset = 0;
  /** Feature-flag hooks; the flags module replaces them. */
  featureEnabled: (flag: string, user: string) => boolean = () => true;
  flagsFor: (user: string) => Record<string, boolean> = () => ({});
  /** Effective global state of each flag, for the feature_enabled metric. */
  featureStates: () => Iterable<readonly [string, boolean]> = () => [];

  constructor(opts: GatewayOptions) {
    const config = opts.config;
    const bus = opts.bus ?? new MemoryBus({ historySize: config.historySize, historyRoomBytes: config.historyRoomBytes, historyTotalBytes: config.historyTotalBytes });
    const serverId = config.serverId || defaultServerId();
    const log = (opts.log ?? silentLogger).child({ server: serverId });
    this.role = opts.role ?? 'standalone';
    const hub = new Hub(bus, this.counters);
    this.services = { serverId, config, bus, hub, counters: this.counters, log };
    for (const p of opts.plugins ?? []) this.plugins.register(p);
    this.limits = {
      maxFrameBytes: config.maxFrameBytes,
      maxRooms: config.maxRoomsPerConnection,
      rateLimitPerSec: config.rateLimitPerSec,
      idleTimeoutMs: config.idleTimeoutMs,
    };
    this.stats = new StatsSampler(this.counters);
    this.tcp = createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.tcp.on('error', (err) => log.error('listener error', { err }));
    const endpoints: HttpEndpoints = {
      stats: () => this.statsSnapshot(),
      readiness: () => this.readiness(),
      metrics: () => (this.metricsHandler ? this.metricsHandler() : Promise.reject(new Error('metrics are not enabled'))),
    };
    const handler = createHttpHandler(endpoints);
    this.sniffedHttp = createHttpServer(handler);
    if (config.adminPort >= 0) this.admin = createHttpServer(handler);

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
      features: () => this.featureStates(),
    });
    this.metricsHandler = () => this.metrics.expose();
    this.statsExtras.push(() => this.monitor.statsFields());
    this.readinessChecks.push(() => (this.sessionRoomLeft() ? null : 'overloaded: refusing new sessions'));
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
    this.listening = true;
    this.stats.start();
    this.monitor.start();
    const sweepMs = Math.max(50, Math.min(1000, Math.floor(Math.min(config.idleTimeoutMs, config.helloTimeoutMs) / 4)));
    this.sweepTimer = setInterval(() => this.sweep(), sweepMs);
    this.sweepTimer.unref();
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
    const max = this.services.config.maxConnections;
    if (this.draining || (max > 0 && this.conns.size >= max)) {
      socket.destroy();
      return;
    }
    const conn = new Connection(socket, this, Date.now());
    this.conns.add(conn);
    this.counters.connections++;
    this.counters.connectionsOpened++;
  }

  nextSessionId(): string {
    return `${this.services.serverId}:${(++this.sessionSeq).toString(36)}`;
  }

  handOverHttp(socket: Socket, firstBytes: Buffer): void {
    socket.pause();
    socket.unshift(firstBytes);
    this.sniffedHttp.emit('connection', socket);
    socket.resume();
  }

  closed(conn: Connection): void {
    this.conns.delete(conn);
    if (this.drained !== null && this.conns.size === 0) this.drained();
  }

  /** Close connections that said nothing for too long, or never said hello. */
  private sweep(): void {
    const cfg = this.services.config;
    const now = Date.now();
    for (const conn of this.conns) {
      if (!conn.isOpen) continue;
      if (conn.user === '' && now - conn.openedAt > cfg.helloTimeoutMs) {
        // No mode yet: nothing (or half a preamble) was sent, and there is no way to answer.
        if (conn.mode === Mode.Unknown) conn.destroy();
        else conn.fail(undefined, ErrorCode.Unauthorized, `no hello within ${cfg.helloTimeoutMs} ms`);
      } else if (now - conn.lastSeen > cfg.idleTimeoutMs) {
        conn.disconnect(DisconnectReason.IdleTimeout);
      }
    }
  }

  readiness(): { ready: boolean; reasons: string[] } {
    const reasons: string[] = [];
    if (!this.listening) reasons.push('not listening');
    if (this.draining) reasons.push('draining');
    if (!this.services.bus.ready) reasons.push(`${this.services.bus.kind} bus not connected`);
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
    return this.stats.snapshot(extra);
  }

  /**
   * Graceful shutdown: stop accepting, tell every client to reconnect elsewhere, let queued
   * frames drain until the deadline, then close whatever is left.
   */
  async shutdown(deadlineMs = this.services.config.shutdownDrainMs): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    const { log, bus } = this.services;
    log.info('shutting down', { connections: this.conns.size, deadlineMs });
    const closedListener = new Promise<void>((resolve) => this.tcp.close(() => resolve()));
    const allGone = new Promise<void>((resolve) => {
      this.drained = resolve;
      if (this.conns.size === 0) resolve();
    });
    for (const conn of this.conns) conn.disconnect(DisconnectReason.Shutdown, deadlineMs);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([allGone, new Promise<void>((resolve) => (timer = setTimeout(resolve, deadlineMs)))]);
    clearTimeout(timer);
    for (const conn of this.conns) conn.destroy();
    await closedListener;
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.stats.stop();
    this.monitor.stop();
    this.sniffedHttp.closeAllConnections();
    if (this.admin !== null) {
      const admin = this.admin;
      admin.closeAllConnections();
      await new Promise<void>((resolve) => admin.close(() => resolve()));
    }
    await bus.stop();
    this.listening = false;
    log.info('stopped');
  }
}
