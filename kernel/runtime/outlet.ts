// Routing of one output port's batches over its links, by each link's partitioning.

import type { Batch, ChannelSender, Header, Key, Link } from '../contracts.js'
import { instanceOfKey } from '../hash.js'

/** How one link spreads batches over the receiving instances' channels. */
export type RouteKind = 'direct' | 'rebalance' | 'hash' | 'broadcast' | 'round-robin'

/** One link as seen from one producer instance: its channels, indexed by receiver instance. */
export interface Route {
  readonly link: Link
  readonly kind: RouteKind
  readonly channels: readonly ChannelSender[]
  readonly key?: (value: unknown) => Key
}

/**
 * Sends batches of one output port along every link leaving it. A batch is never mutated: hash and
 * round-robin partitioning build new batches per receiver; broadcast shares one.
 */
export class Outlet {
  private turn = 0

  /**
   * @param unroutable records a value whose partitioning key could not be computed (a dead letter:
   *   the value never reaches any receiver).
   */
  constructor(
    readonly port: string,
    readonly routes: readonly Route[],
    producerIndex: number,
    private readonly unroutable: (value: unknown, link: Link, error: unknown) => void,
  ) {
    this.turn = producerIndex
  }

  /** True when a request on this port reaches exactly one receiver. */
  routesOneReceiver(): boolean {
    return this.routes.length === 1 && this.routes[0]!.kind !== 'broadcast'
  }

  /** Sends a batch; returns the channels that have no credit left (the caller waits on them). */
  send(batch: Batch, full: ChannelSender[]): void {
    for (const route of this.routes) {
      switch (route.kind) {
        case 'direct':
          this.deliver(route.channels[0]!, batch, full)
          break
        case 'broadcast':
          for (const channel of route.channels) this.deliver(channel, batch, full)
          break
        case 'rebalance':
          this.deliver(route.channels[this.turn++ % route.channels.length]!, batch, full)
          break
        case 'hash':
        case 'round-robin':
          this.split(route, batch, full)
          break
      }
    }
  }

  private split(route: Route, batch: Batch, full: ChannelSender[]): void {
    const n = route.channels.length
    const values: unknown[][] = Array.from({ length: n }, () => [])
    const headers = batch.headers
    const routedHeaders: (Header | undefined)[][] | undefined = headers === undefined ? undefined : Array.from({ length: n }, () => [])
    const key = route.key
    for (let i = 0; i < batch.values.length; i++) {
      const value = batch.values[i]
      let target: number
      if (key === undefined) target = this.turn++ % n
      else {
        try {
          target = instanceOfKey(key(value), n)
        } catch (error) {
          this.unroutable(value, route.link, error)
          continue
        }
      }
      values[target]!.push(value)
      if (routedHeaders !== undefined) routedHeaders[target]!.push(headers![i])
    }
    for (let target = 0; target < n; target++) {
      const part = values[target]!
      if (part.length === 0) continue
      this.deliver(route.channels[target]!, routedHeaders === undefined ? { values: part } : { values: part, headers: routedHeaders[target]! }, full)
    }
  }

  private deliver(channel: ChannelSender, batch: Batch, full: ChannelSender[]): void {
    channel.send(batch)
    if (!channel.ready()) full.push(channel)
  }

  /** Sends a marker batch on every channel of every link, credit or not (markers take none). */
  sendMarker(batch: Batch): void {
    for (const route of this.routes) for (const channel of route.channels) channel.send(batch)
  }

  /** Ends every channel of every link. */
  end(): void {
    for (const route of this.routes) for (const channel of route.channels) channel.end()
  }
}
