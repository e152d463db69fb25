//go:build linux

package queue

import (
	"bytes"
	"testing"
	"time"
)

// BenchmarkCheckpointSync compares the two ways a checkpoint can make a
// second's worth of Puts durable (2000 messages here, body and state file of
// 1 KiB each, written without fsync): one syncfs(2), which syncMsgFiles
// uses on Linux, or an fsync of each file from 64 goroutines (syncEach).
func BenchmarkCheckpointSync(b *testing.B) {
	const perCheckpoint = 2000
	data := bytes.Repeat([]byte("0123456789abcde\n"), 64)
	for _, mode := range []string{"syncfs", "fsync-each"} {
		b.Run(mode, func(b *testing.B) {
			s := openNoCheckpoint(b, b.TempDir(), nil, nil)
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				var ids []string
				for range perCheckpoint {
					id := NewID(time.Now())
					if err := writeFileNoSync(s.bodyPath(id), data); err != nil {
						b.Fatal(err)
					}
					if err := writeFileNoSync(s.statePath(id), data); err != nil {
						b.Fatal(err)
					}
					ids = append(ids, id)
				}
				b.StartTimer()
				var err error
				if mode == "syncfs" {
					err = s.syncMsgFiles(nil)
				} else {
					err = s.syncEach(ids)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perCheckpoint), "ns/msg")
		})
	}
}
