// The frame-channel compliance suite over the in-memory frame channel (the libp2p transport runs it in kmods/transport/frame-channel-compliance.test.ts).
import { describeFrameChannelCompliance } from './frame-channel-compliance.js'
import { memoryFrameChannel } from './memory-transport.js'

describeFrameChannelCompliance('in-memory frame channel', ({ id }) => {
  const wire = memoryFrameChannel({ link: id, producer: 'A', consumer: 'B' })
  return { sender: wire.sender, receiver: wire.receiver, producerPeer: 'A', consumerPeer: 'B', settled: wire.settled }
})
