"""The README's kafka-python example, run against a Sable broker by .ci/run.

Consumer groups arrive with a later issue, so this version reads the message back without a
group_id: kafka-python then assigns itself every partition of the topic and commits nothing.
readme_example_groups.py is the README example as written, group_id and all.

Usage: python3 readme_example.py [BOOTSTRAP]   (default localhost:9092)
"""

import json
import sys

from kafka import KafkaConsumer, KafkaProducer

EXPECTED = {'order_id': 1, 'customer': 'John Doe'}


def main():
    bootstrap = sys.argv[1] if len(sys.argv) > 1 else 'localhost:9092'

    producer = KafkaProducer(bootstrap_servers=bootstrap,
                             value_serializer=lambda v: json.dumps(v).encode('utf-8'))
    sent = producer.send('order_topic', EXPECTED); producer.flush()
    # Surface a failed produce here rather than as a confusing empty read below.
    metadata = sent.get(timeout=30)
    print(f'produced to {metadata.topic}/{metadata.partition}@{metadata.offset}')

    consumer = KafkaConsumer('order_topic', bootstrap_servers=bootstrap,
                             auto_offset_reset='earliest',
                             consumer_timeout_ms=30000,
                             value_deserializer=lambda m: json.loads(m.decode('utf-8')))
    got = None
    for message in consumer:
        print(message.value)
        got = message.value
        break
    consumer.close()
    producer.close()

    if got != EXPECTED:
        sys.exit(f'FAIL: read {got!r}, expected {EXPECTED!r}')
    print('OK: README example (no consumer group) read back its message')


if __name__ == '__main__':
    main()
