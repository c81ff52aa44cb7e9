"""The README's kafka-python example exactly as written (group_id='order_group'), except that
the bootstrap address is an argument and the loop stops after the first message.

.ci/run runs it with every kafka-python version it installs.

Usage: python3 readme_example_groups.py [BOOTSTRAP]   (default localhost:9092)
"""

import sys

bootstrap = sys.argv[1] if len(sys.argv) > 1 else 'localhost:9092'

# --- README example, verbatim but for bootstrap_servers, consumer_timeout_ms and the break ---
from kafka import KafkaProducer, KafkaConsumer
import json
producer = KafkaProducer(bootstrap_servers=bootstrap,
                         value_serializer=lambda v: json.dumps(v).encode('utf-8'))
producer.send('order_topic', {'order_id': 1, 'customer': 'John Doe'}); producer.flush()
consumer = KafkaConsumer('order_topic', bootstrap_servers=bootstrap, group_id='order_group',
                         auto_offset_reset='earliest',
                         value_deserializer=lambda m: json.loads(m.decode('utf-8')),
                         consumer_timeout_ms=30000)
got = None
for message in consumer: print(message.value); got = message.value; break
# --- end of README example ---

consumer.close()
producer.close()
expected = {'order_id': 1, 'customer': 'John Doe'}
if got != expected:
    sys.exit(f'FAIL: read {got!r}, expected {expected!r}')
print('OK: README example (consumer group order_group) read back its message')
