// A running job: plans the program through the layers, materializes instances and channels, runs the drivers.

import { Subject, type Observable } from 'rxjs'
import type {
  Attempt,
  ChannelInfo,
  ChannelReceiver,
  ChannelSender,
  ChannelStats,
  ControlHandler,
  ControlRegistry,
  DeadLetter,
  Instance,
  InstanceInfo,
  InstanceSpec,
  Job,
  JobEvent,
  JobCluster,
  JobReport,
  JobStats,
  Layer,
  LayerNotice,
  Link,
  Marker,
  Operator,
  PortCodecs,
  Program,
  RunOptions,
  Spawned,
  SpawnOptions,
} from '../contracts.js'
import { DeadLetterLimitError, HandlerError, InvalidOptionError, JobAbortedError, JobFailedError, LaminaError, UnknownControlError, type Where } from '../errors.js'
import { fuseChains } from '../fusion.js'
import { channelThrough, instanceThrough, JOB_SUCCEEDED, planThrough, wrapChannel } from '../layer.js'
import { isKeyed, parallelismOf } from '../operator.js'
import { AtomInstance } from './atom.js'
import { LocalChannel, receiverOf, senderOf } from './channel.js'
import { Driver, type DriverJob } from './driver.js'
import { Outlet, type Route, type RouteKind } from './outlet.js'
import { StreamInstance } from './stream.js'

let jobCounter = 0

/** Builds the kernel's own instance for an operator: the innermost builder under every layer. */
function baseInstance(spec: InstanceSpec, driver: Driver): Instance {
  return spec.operator.body.form === 'atom' ? new AtomInstance(spec, driver) : new StreamInstance(spec, driver)
}

/** The kernel's implementation of `Job`. Created by `Kernel.run`. */
export class RunningJob implements Job, DriverJob {
  readonly id: string
  readonly abortSignal: AbortSignal
  readonly stopSignal: AbortSignal
  readonly done: Promise<JobReport>
  readonly deadLetters: DeadLetter[] = []
  readonly attempt: Attempt
  private readonly abortController = new AbortController()
  private readonly stopController = new AbortController()
  private readonly eventSubject = new Subject<JobEvent>()
  private readonly handlers = new Map<string, ControlHandler>()
  /** What each layer does once the job succeeded in a cluster (`ControlRegistry.onSucceeded`). */
  private readonly succeededHandlers: { readonly layer: string; readonly handler: () => Promise<LayerNotice | undefined> | LayerNotice | undefined }[] = []
  private readonly syscalls = new Map<string, (argument: unknown, caller: InstanceInfo) => unknown>()
  private readonly drivers: Driver[] = []
  /** Drivers of this peer's source instances (operators without inputs): where markers are injected. */
  private readonly sources: Driver[] = []
  private readonly channels: { link: string; base: LocalChannel }[] = []
  private readonly remotes: { link: string; info: ChannelInfo; peer: string; records: number; maxQueued: number; channel: { readonly queued: number } }[] = []
  private readonly started = Date.now()
  private readonly batchSize: number
  /** `{ peer }` for instances of a deployed job, else nothing. */
  private readonly peerField: { readonly peer?: string }
  private readonly validation: 'edges' | 'always' | 'none'
  private readonly capacity: number
  private planned: Program
  private failure: LaminaError | undefined
  private spawned = 0

  constructor(
    program: Program,
    private readonly layers: readonly Layer[],
    private readonly options: RunOptions = {},
  ) {
    this.id = options.id ?? `${program.name}-${++jobCounter}`
    this.attempt = options.attempt ?? { lineage: this.id, number: 0 }
    this.planned = program
    this.abortSignal = this.abortController.signal
    this.stopSignal = this.stopController.signal
    this.validation = options.validate ?? 'edges'
    this.peerField = options.deployment === undefined ? {} : { peer: options.deployment.self }
    this.batchSize = positive('batchSize', options.batchSize ?? 1024)
    this.capacity = positive('capacity', options.capacity ?? 4096)
    this.abortSignal.addEventListener(
      'abort',
      () => {
        this.stopController.abort(this.abortSignal.reason)
        for (const driver of this.drivers) driver.wake()
      },
      { once: true },
    )
    const external = options.signal
    if (external !== undefined) {
      if (external.aborted) this.abortController.abort(external.reason)
      else external.addEventListener('abort', () => this.abort(external.reason), { once: true })
    }
    this.done = this.execute()
    // A job nobody awaits must not crash the process with an unhandled rejection: callers see
    // failures through `done`, `events` and the rejection of `stop()`.
    this.done.catch(() => undefined)
  }

  get program(): Program {
    return this.planned
  }

  get events(): Observable<JobEvent> {
    return this.eventSubject.asObservable()
  }

  stats(): JobStats {
    return {
      instances: this.drivers.map((d) => ({
        operator: d.info.operator,
        instance: d.info.instance,
        recordsIn: d.recordsIn,
        recordsOut: d.recordsOut,
        deadLetters: d.deadLetters,
        unlinked: d.unlinked,
      })),
      channels: this.channels
        .map(
          ({ link, base }): ChannelStats => ({
            link,
            from: base.info.from.instance,
            to: base.info.to.instance,
            records: base.records,
            queued: base.queued,
            maxQueued: base.maxQueued,
          }),
        )
        .concat(
          this.remotes.map((r) => ({
            link: r.link,
            from: r.info.from.instance,
            to: r.info.to.instance,
            records: r.records,
            queued: r.channel.queued,
            maxQueued: r.maxQueued,
            peer: r.peer,
          })),
        ),
      deadLetters: this.deadLetters.length,
    }
  }

  async stop(): Promise<JobReport> {
    this.stopController.abort('stopped')
    return this.done
  }

  abort(reason?: unknown): void {
    this.abortController.abort(reason ?? 'aborted')
  }

  inject(marker: Marker): number {
    const batch = { values: [], marker }
    let took = 0
    for (const driver of this.sources) if (driver.inject(batch)) took++
    return took
  }

  /** The peers of this job and how to reach its share on each (for layers' control hooks). */
  private clusterView(): JobCluster {
    const deployment = this.options.deployment
    const self = deployment?.self ?? 'local'
    return {
      self,
      submitter: deployment?.submitter ?? self,
      peers: () => deployment?.peers?.() ?? [self],
      call: async (peer, kind, payload, options) => {
        if (peer === self) return this.control(kind, payload)
        if (deployment?.call === undefined) throw new InvalidOptionError('job cluster', 'peer', `${peer} is not a peer of job ${this.id} (it runs on ${self} alone)`)
        return deployment.call(peer, kind, payload, options)
      },
      ...(deployment?.workDir === undefined ? {} : { workDir: deployment.workDir }),
      ...(deployment?.rescale === undefined ? {} : { rescale: deployment.rescale.bind(deployment) }),
      ...(deployment?.recordCheckpoint === undefined ? {} : { recordCheckpoint: deployment.recordCheckpoint.bind(deployment) }),
    }
  }

  async control(kind: string, payload?: unknown): Promise<unknown> {
    if (kind === JOB_SUCCEEDED) {
      const notices: (LayerNotice & { readonly layer: string })[] = []
      for (const { layer, handler } of this.succeededHandlers) {
        const notice = await handler()
        if (notice !== undefined) notices.push({ layer, ...notice })
      }
      return notices
    }
    const handler = this.handlers.get(kind)
    if (handler === undefined) throw new UnknownControlError('control', kind, [...this.handlers.keys()])
    return handler(payload)
  }

  // --- DriverJob --------------------------------------------------------------------------------

  deadLetter(where: Where, error: LaminaError, value: unknown): void {
    const letter: DeadLetter = { job: this.id, where, code: error.code, message: error.message, value, error, time: Date.now() }
    this.deadLetters.push(letter)
    this.options.onDeadLetter?.(letter)
    this.eventSubject.next({ type: 'dead-letter', deadLetter: letter })
    if (this.options.deadLetters === 'fail') this.fail(error)
    else if (this.deadLetters.length > (this.options.deadLetterLimit ?? 100_000)) this.fail(new DeadLetterLimitError(this.options.deadLetterLimit ?? 100_000))
  }

  async call(name: string, argument: unknown, caller: InstanceInfo): Promise<unknown> {
    const syscall = this.syscalls.get(name)
    if (syscall === undefined) throw new UnknownControlError('syscall', name, [...this.syscalls.keys()])
    return syscall(argument, caller)
  }

  spawn<I extends PortCodecs>(parent: Driver, operator: Operator<I, PortCodecs>, options: SpawnOptions | undefined): Spawned<I> {
    const info: InstanceInfo = {
      job: this.id,
      lineage: this.attempt.lineage,
      operator: `${parent.info.operator}/${operator.name}`,
      instance: this.spawned++,
      parallelism: 1,
      batchSize: this.batchSize,
      ...this.peerField,
    }
    const outlets = new Map<string, Outlet>()
    for (const [childPort, parentPort] of Object.entries(options?.outputs ?? {})) {
      if (operator.outputs[childPort] === undefined) throw new InvalidOptionError(`spawn ${operator.name}`, `outputs.${childPort}`, 'is not an output port of the spawned operator')
      if (parent.operator.inputs[parentPort] === undefined)
        throw new InvalidOptionError(`spawn ${operator.name}`, `outputs.${childPort}`, `names ${parentPort}, not an input port of ${parent.info.operator}`)
      const link: Link = {
        from: { operator: info.operator, port: childPort },
        to: { operator: parent.info.operator, port: parentPort },
        partitioning: undefined,
        capacity: undefined,
        id: `${info.operator}.${childPort} -> ${parent.info.operator}.${parentPort}`,
      }
      const channel = this.makeChannel(link, info.instance, parent.info.instance)
      parent.addInput({ port: parentPort, channel: channel.receiver, auxiliary: true })
      if (this.validation !== 'none' && operator.outputs[childPort]!.codec !== parent.operator.inputs[parentPort]!.codec) parent.checkedPorts.add(parentPort)
      outlets.set(childPort, this.makeOutlet(childPort, [{ link, kind: 'direct', channels: [channel.sender] }], 0))
    }
    // A child's inputs come from its parent's handlers (typed by the child's own codecs): checked
    // only under 'always'. What it emits into the parent is checked like any link whose codecs differ.
    const child = new Driver(info, operator, outlets, this, this.validation === 'always' ? new Set(Object.keys(operator.inputs)) : new Set())
    const inputs = new Map<string, ChannelSender>()
    for (const port of Object.keys(operator.inputs)) {
      const link: Link = {
        from: { operator: parent.info.operator, port: `spawn:${port}` },
        to: { operator: info.operator, port },
        partitioning: undefined,
        capacity: undefined,
        id: `${parent.info.operator} -> ${info.operator}.${port}`,
      }
      const channel = this.makeChannel(link, parent.info.instance, info.instance)
      inputs.set(port, channel.sender)
      child.addInput({ port, channel: channel.receiver, auxiliary: false })
    }
    child.instance = instanceThrough(this.layers, { info, operator, outputs: child.outputs }, (s) => baseInstance(s, child))
    this.drivers.push(child)
    const endInputs = (): void => {
      for (const channel of inputs.values()) channel.end()
    }
    const done = this.runDriver(child)
    parent.adopt(child, endInputs, done)
    const abort = this.abortSignal
    return {
      async send(port, value) {
        const channel = inputs.get(port)
        if (channel === undefined) throw new InvalidOptionError(`spawned ${info.operator}`, 'port', `${port} is not an input port`)
        channel.send({ values: [value] })
        if (!channel.ready()) await channel.whenReady(abort)
      },
      end: endInputs,
      done,
    }
  }

  // --- materialization --------------------------------------------------------------------------

  private async execute(): Promise<JobReport> {
    try {
      if (this.options.planned !== true) {
        const self = this.options.deployment?.submitter ?? this.options.deployment?.self ?? 'local'
        this.planned = await planThrough(this.layers, this.planned, { job: this.id, self, peers: this.options.peers ?? [{ id: self, tags: {} }] })
      }
      if (this.options.fuse !== false) this.planned = fuseChains(this.planned, this.options.deployment)
      const cluster = this.clusterView()
      for (const layer of this.layers) {
        const registry: ControlRegistry = {
          handle: (kind, handler) => void this.handlers.set(kind, handler),
          syscall: (name, fn) => void this.syscalls.set(name, fn),
          onSucceeded: (handler) => void this.succeededHandlers.push({ layer: layer.name, handler }),
          job: this,
          notify: (kind, message, data) =>
            this.eventSubject.next({
              type: 'layer',
              layer: layer.name,
              kind,
              message,
              ...(data === undefined ? {} : { data }),
              ...(this.peerField.peer === undefined ? {} : { peer: this.peerField.peer }),
            }),
          cluster,
        }
        layer.control?.(registry)
      }
      this.materialize(this.planned)
      this.eventSubject.next({ type: 'started', job: this.id })
      const abort = new Promise<never>((_, reject) => {
        const onAbort = (): void => reject(this.failure ?? new JobAbortedError(this.id, this.abortSignal.reason))
        if (this.abortSignal.aborted) onAbort()
        else this.abortSignal.addEventListener('abort', onAbort, { once: true })
      })
      abort.catch(() => undefined)
      // Spawned children add drivers while the job runs: wait until every driver, old and new, is done.
      let waited = 0
      while (waited < this.drivers.length) {
        const batch = this.drivers.slice(waited).map((d) => this.runDriver(d))
        waited = this.drivers.length
        await Promise.race([Promise.all(batch), abort])
      }
      if (this.failure !== undefined) throw this.failure
      const report: JobReport = { job: this.id, stats: this.stats(), deadLetters: this.deadLetters, elapsedMs: Date.now() - this.started }
      this.eventSubject.next({ type: 'finished', job: this.id })
      this.eventSubject.complete()
      return report
    } catch (error) {
      const failure = this.failure ?? (error instanceof LaminaError ? error : new JobFailedError(this.id, error))
      this.failure = failure
      this.abortController.abort(failure)
      this.eventSubject.next({ type: 'failed', job: this.id, error: failure })
      this.eventSubject.complete()
      throw failure
    }
  }

  private readonly runs = new Map<Driver, Promise<void>>()

  /** Runs a driver once; the same promise for every caller. */
  private runDriver(driver: Driver): Promise<void> {
    let run = this.runs.get(driver)
    if (run === undefined) {
      run = driver.run().then(
        () => this.eventSubject.next({ type: 'instance-finished', operator: driver.info.operator, instance: driver.info.instance }),
        (error: unknown) => {
          if (!(error instanceof JobAbortedError)) this.fail(error)
          throw error
        },
      )
      run.catch(() => undefined)
      this.runs.set(driver, run)
    }
    return run
  }

  private fail(error: unknown): void {
    if (this.failure !== undefined) return
    this.failure = new JobFailedError(this.id, error)
    this.abortController.abort(this.failure)
  }

  /** Whether values on a link are checked against the receiving port's codec (see RunOptions.validate). */
  private checks(producer: Operator, output: string, consumer: Operator, input: string): boolean {
    if (this.validation === 'none') return false
    if (this.validation === 'always') return true
    const fromSource = Object.keys(producer.inputs).length === 0
    return fromSource || producer.outputs[output]!.codec !== consumer.inputs[input]!.codec
  }

  /** True when this peer runs the instance (always, without a deployment). */
  private isHere(operator: string, instance: number): boolean {
    const deployment = this.options.deployment
    return deployment === undefined || deployment.peerOf(operator, instance) === deployment.self
  }

  /** The sending end of a channel whose receiving end is on another peer, wrapped by the layers like any channel. */
  private makeRemoteSender(link: Link, from: number, to: number, codec: Operator['inputs'][string]['codec']): ChannelSender {
    const deployment = this.options.deployment!
    const info = this.channelInfo(link, from, to)
    const peer = deployment.peerOf(link.to.operator, to)
    const inner = deployment.connect({
      side: 'sender',
      info,
      peer,
      capacity: link.capacity ?? this.capacity,
      codec,
      deadLetter: (where, error, value) => this.deadLetter(where, error, value),
    })
    const counted = { link: link.id, info, peer, records: 0, maxQueued: 0, channel: inner }
    this.remotes.push(counted)
    const channel = wrapChannel(inner, {
      send: (batch) => {
        counted.records += batch.values.length
        inner.send(batch)
        if (inner.queued > counted.maxQueued) counted.maxQueued = inner.queued
      },
    })
    return channelThrough(this.layers, channel)
  }

  /** The receiving end of a channel whose sending end is on another peer, wrapped by the layers like any channel. */
  private makeRemoteReceiver(link: Link, from: number, to: number, codec: Operator['inputs'][string]['codec']): ChannelReceiver {
    const deployment = this.options.deployment!
    const info = this.channelInfo(link, from, to)
    const peer = deployment.peerOf(link.from.operator, from)
    const inner = deployment.connect({
      side: 'receiver',
      info,
      peer,
      capacity: link.capacity ?? this.capacity,
      codec,
      deadLetter: (where, error, value) => this.deadLetter(where, error, value),
    })
    const counted = { link: link.id, info, peer, records: 0, maxQueued: 0, channel: inner }
    this.remotes.push(counted)
    const channel = wrapChannel(inner, {
      take: () => {
        if (inner.queued > counted.maxQueued) counted.maxQueued = inner.queued
        const batch = inner.take()
        if (typeof batch === 'object') counted.records += batch.values.length
        return batch
      },
    })
    return channelThrough(this.layers, channel)
  }

  /** An in-memory channel: its two ends, each wrapped by the layers' channel hooks. */
  private makeChannel(link: Link, from: number, to: number): { sender: ChannelSender; receiver: ChannelReceiver } {
    const base = new LocalChannel(this.channelInfo(link, from, to), link.capacity ?? this.capacity)
    this.channels.push({ link: link.id, base })
    // Without channel hooks the channel is both ends itself (no forwarding on the hot path).
    if (!this.layers.some((layer) => layer.channel !== undefined)) return { sender: base, receiver: base }
    return { sender: channelThrough(this.layers, senderOf(base)), receiver: channelThrough(this.layers, receiverOf(base)) }
  }

  private channelInfo(link: Link, from: number, to: number): ChannelInfo {
    return {
      job: this.id,
      link,
      from: { operator: link.from.operator, port: link.from.port, instance: from },
      to: { operator: link.to.operator, port: link.to.port, instance: to },
    }
  }

  private makeOutlet(port: string, routes: Route[], producer: number): Outlet {
    return new Outlet(port, routes, producer, (value, link, error) => {
      const where = { operator: link.from.operator, port: link.from.port, instance: producer }
      this.deadLetter(where, new HandlerError(where, `cannot compute the partitioning key for ${link.id}: ${error instanceof Error ? error.message : String(error)}`), value)
    })
  }

  private materialize(program: Program): void {
    const routes = new Map<string, Route[]>() // `${operator}#${instance}.${port}` -> routes
    const inputs = new Map<string, { port: string; channel: ChannelReceiver }[]>() // `${operator}#${instance}`
    const byName = new Map(program.operators.map((o) => [o.name, o]))
    const checked = new Map<string, string[]>() // operator -> input ports to check
    for (const link of program.links) {
      const producer = byName.get(link.from.operator)!
      const consumer = byName.get(link.to.operator)!
      if (this.checks(producer, link.from.port, consumer, link.to.port)) checked.set(consumer.name, [...(checked.get(consumer.name) ?? []), link.to.port])
      const np = parallelismOf(producer)
      const nc = parallelismOf(consumer)
      const partitioning = link.partitioning ?? (isKeyed(consumer) ? { kind: 'hash' as const } : { kind: 'forward' as const })
      const kind: RouteKind = partitioning.kind === 'forward' ? (np === nc ? 'direct' : 'rebalance') : nc === 1 && partitioning.kind !== 'broadcast' ? 'direct' : partitioning.kind
      const consumerKey = consumer.body.form === 'atom' ? consumer.body.key : undefined
      const key = partitioning.kind === 'hash' ? (partitioning.key ?? ((v: unknown) => consumerKey!(v, link.to.port))) : undefined
      for (let p = 0; p < np; p++) {
        const targets = kind === 'direct' ? [np === nc ? p : 0] : Array.from({ length: nc }, (_, c) => c)
        const producerHere = this.isHere(producer.name, p)
        const channels: ChannelSender[] = []
        for (const c of targets) {
          const consumerHere = this.isHere(consumer.name, c)
          if (!producerHere && !consumerHere) continue
          const codec = consumer.inputs[link.to.port]!.codec
          const ends: { sender?: ChannelSender; receiver?: ChannelReceiver } =
            producerHere && consumerHere
              ? this.makeChannel(link, p, c)
              : producerHere
                ? { sender: this.makeRemoteSender(link, p, c, codec) }
                : { receiver: this.makeRemoteReceiver(link, p, c, codec) }
          if (ends.receiver !== undefined) {
            const id = `${consumer.name}#${c}`
            inputs.set(id, [...(inputs.get(id) ?? []), { port: link.to.port, channel: ends.receiver }])
          }
          if (ends.sender !== undefined) channels.push(ends.sender)
        }
        if (!producerHere) continue
        const id = `${producer.name}#${p}.${link.from.port}`
        routes.set(id, [...(routes.get(id) ?? []), key === undefined ? { link, kind, channels } : { link, kind, channels, key }])
      }
    }
    for (const operator of program.operators) {
      const parallelism = parallelismOf(operator)
      for (let i = 0; i < parallelism; i++) {
        if (!this.isHere(operator.name, i)) continue
        const info: InstanceInfo = { job: this.id, lineage: this.attempt.lineage, operator: operator.name, instance: i, parallelism, batchSize: this.batchSize, ...this.peerField }
        const outlets = new Map<string, Outlet>()
        for (const port of Object.keys(operator.outputs)) {
          const portRoutes = routes.get(`${operator.name}#${i}.${port}`)
          if (portRoutes !== undefined) outlets.set(port, this.makeOutlet(port, portRoutes, i))
        }
        const driver = new Driver(info, operator, outlets, this, new Set(checked.get(operator.name)))
        for (const { port, channel } of inputs.get(`${operator.name}#${i}`) ?? []) driver.addInput({ port, channel, auxiliary: false })
        driver.instance = instanceThrough(this.layers, { info, operator, outputs: driver.outputs }, (spec) => baseInstance(spec, driver))
        this.drivers.push(driver)
        if (Object.keys(operator.inputs).length === 0) this.sources.push(driver)
      }
    }
  }
}

function positive(option: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new InvalidOptionError('run options', option, `must be a positive integer, got ${value}`)
  return value
}
