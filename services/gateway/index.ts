/** The gateway: client listener, sessions, plugins, local fan-out. */
export { API_RESERVE } from './descriptors';
export { GatewayServer, defaultServerId, type GatewayOptions, type ListeningAddresses } from './server';
export { Connection } from './connection';
export { Session, SessionState, reconnectFrame, errorFrame } from './session';
export { Hub, type HubMember } from './hub';
export { PluginRegistry, type MessageProcessor, type PluginContext, type GatewayServices, type ProcessResult } from './plugins';
export { verifyHs256, signHs256, type VerifiedToken } from './auth';
export { type ReadinessCheck, type StatsContributor } from './server';
