package delivery

import (
	"testing"

	"github.com/petrel-mta/petrel/internal/dnsx"
)

func TestShuffleEqualPreference(t *testing.T) {
	firsts := map[string]int{}
	for range 300 {
		hosts := shuffleEqual([]dnsx.Host{
			{Name: "a", Preference: 10}, {Name: "b", Preference: 10}, {Name: "c", Preference: 10},
			{Name: "d", Preference: 20}, {Name: "e", Preference: 20}, {Name: "f", Preference: 30},
		})
		for i := 1; i < len(hosts); i++ {
			if hosts[i].Preference < hosts[i-1].Preference {
				t.Fatalf("preference order broken: %v", hosts)
			}
		}
		if hosts[5].Name != "f" {
			t.Fatalf("%v", hosts)
		}
		firsts[hosts[0].Name]++
	}
	if len(firsts) != 3 {
		t.Errorf("first host over 300 runs: %v", firsts)
	}
}
