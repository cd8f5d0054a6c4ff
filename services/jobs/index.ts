// Lamina's cluster API (`lamina/cluster`): start or join peers, submit program modules, supervise.

export * from './errors.js'
export { startCluster, joinCluster, type Cluster, type ClusterMember, type StartClusterOptions, type JoinClusterOptions } from './launcher.js'
export { Peer, type PeerOptions, type SubmitOptions, type SubmittedJob, type ClusterReport, type ClusterJobEvent, type Members } from './peer.js'
export { roundRobinPlan, instanceKey, type Plan } from './placement.js'
export { loadProgram, type LoadedProgram, type ProgramEnvironment, type ProgramFactory } from './program-module.js'
export { applyPlan, shipPlan, type ShippedPlan } from './shipped-plan.js'
export { parsePeerCommand, runPeer, type PeerCommand } from './peer-main.js'
export { ProgressDisplay, totals, type OperatorTotals } from './progress.js'
export * from '../../kmods/nursery/index.js'
