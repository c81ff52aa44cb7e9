// sarama (Debian's 1.22) against Sable with the old API versions it asks: Produce v3, Fetch v4,
// JoinGroup v1, OffsetCommit v2. An admin CreateTopics, a sync producer with acks=all, a consumer
// group that commits, and a second session of the same group that finds nothing left.
// Built and run by .ci/run: GO111MODULE=off GOPATH=/usr/share/gocode go build tests/go/sarama_check/main.go
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

const count = 100

type handler struct {
	mu   sync.Mutex
	seen map[string]bool
	done chan struct{}
	once sync.Once
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		h.mu.Lock()
		h.seen[string(m.Value)] = true
		n := len(h.seen)
		h.mu.Unlock()
		s.MarkMessage(m, "")
		if n >= count {
			h.once.Do(func() { close(h.done) })
		}
	}
	return nil
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

// consume runs one group session until want records arrived or the wait ends; returns how many.
func consume(brokers []string, topic, group string, want int, wait time.Duration) int {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_0_0_0
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.CommitInterval = 100 * time.Millisecond
	// With no retention set, sarama 1.22 commits with OffsetCommit v1, which Kafka 4 (and so
	// Sable) no longer serves (KIP-896); a retention makes it use v2.
	cfg.Consumer.Offsets.Retention = 24 * time.Hour
	g, err := sarama.NewConsumerGroup(brokers, group, cfg)
	if err != nil {
		fail("consumer group: %v", err)
	}
	h := &handler{seen: map[string]bool{}, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, h); err != nil && ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "consume: %v\n", err)
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	if want > 0 {
		select {
		case <-h.done:
		case <-time.After(wait):
		}
	} else {
		time.Sleep(wait)
	}
	cancel()
	if err := g.Close(); err != nil {
		fail("close group: %v", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.seen)
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: sablecheck HOST:PORT")
	}
	brokers := []string{os.Args[1]}
	topic := fmt.Sprintf("sarama-%d", time.Now().UnixNano())
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_0_0_0
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	admin, err := sarama.NewClusterAdmin(brokers, cfg)
	if err != nil {
		fail("admin: %v", err)
	}
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false); err != nil {
		fail("create topic: %v", err)
	}
	producer, err := sarama.NewSyncProducer(brokers, cfg)
	if err != nil {
		fail("producer: %v", err)
	}
	for i := 0; i < count; i++ {
		msg := &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(fmt.Sprintf("k%d", i%7)),
			Value: sarama.StringEncoder(fmt.Sprintf("v%d", i))}
		if _, _, err := producer.SendMessage(msg); err != nil {
			fail("send %d: %v", i, err)
		}
	}
	producer.Close()
	group := topic + "-g"
	if n := consume(brokers, topic, group, count, 60*time.Second); n != count {
		fail("group read %d records, want %d", n, count)
	}
	if n := consume(brokers, topic, group, 0, 5*time.Second); n != 0 {
		fail("the group read %d records again after committing", n)
	}
	groups, err := admin.ListConsumerGroups()
	if err != nil {
		fail("list groups: %v", err)
	}
	if _, ok := groups[group]; !ok {
		keys := []string{}
		for k := range groups {
			keys = append(keys, k)
		}
		fail("group %s not listed: %s", group, strings.Join(keys, ","))
	}
	admin.Close()
	fmt.Printf("sarama ok: %d records produced (acks=all), consumed by a group, committed\n", count)
}
