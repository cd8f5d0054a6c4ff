// kmods/membership: gossip membership with failure detection over Lamina peer nodes.

export {
  createMembership,
  MEMBERSHIP_PROTOCOL,
  startMembership,
  type Member,
  type MemberStatus,
  type Membership,
  type MembershipEvent,
  type MembershipEventType,
  type MembershipOptions,
} from './membership.js'
export { MembershipJoinError, MembershipMessageError, MembershipOptionError, MembershipStoppedError } from './errors.js'
