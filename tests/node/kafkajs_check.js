// kafkajs 2.2 against Sable: admin, idempotent produce (none and gzip), a group consumer,
// committed offsets. Usage: node tests/node/kafkajs_check.js HOST:PORT (run by .ci/run).
const { Kafka, logLevel, CompressionTypes } = require('kafkajs');
const broker = process.argv[2] || '127.0.0.1:9092';
const topic = 'kjs-' + Date.now();
const count = 200;
const fail = (msg) => { console.error('FAIL: ' + msg); process.exit(1); };

async function main() {
  const kafka = new Kafka({ clientId: 'kjs-check', brokers: [broker], logLevel: logLevel.WARN });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
  const md = await admin.fetchTopicMetadata({ topics: [topic] });
  if (md.topics[0].partitions.length !== 3) fail('partitions: ' + JSON.stringify(md));

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  for (const [i, compression] of [[0, CompressionTypes.None], [1, CompressionTypes.GZIP]]) {
    const messages = [];
    for (let j = 0; j < count / 2; j++) messages.push({ key: 'k' + (j % 7), value: `v-${i}-${j}` });
    await producer.send({ topic, messages, compression, acks: -1 });
  }
  await producer.disconnect();

  const group = topic + '-g';
  const consumer = kafka.consumer({ groupId: group });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = new Set();
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timeout: ${seen.size} of ${count}`)), 60000);
    consumer.run({
      eachMessage: async ({ message }) => {
        seen.add(message.value.toString());
        if (seen.size === count) { clearTimeout(timer); resolve(); }
      },
    }).catch(reject);
  });
  await consumer.disconnect();  // commits the consumed offsets

  const offsets = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  const committed = offsets[0].partitions.reduce((n, p) => n + Number(p.offset), 0);
  if (committed !== count) fail(`committed ${committed}, want ${count}`);
  const groups = await admin.describeGroups([group]);
  if (groups.groups[0].state !== 'Empty') fail('group state ' + groups.groups[0].state);
  await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();
  console.log(`kafkajs ok: ${count} records produced (none + gzip, idempotent), consumed by a group, ${committed} committed`);
}
main().catch((e) => fail(e.stack || String(e)));
