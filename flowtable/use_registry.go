package flowtable

import (
	"runtime"
	"sync"
	"weak"
)

// linkRegistry holds each shard's childLinks until Shard carries them as a
// field (then childLinks becomes `return &s.links` and this file goes).
// Keys are weak, and a cleanup drops a shard's links with the shard, so a
// table that is let go is freed as before. The mutex is taken only by
// LinkChild (first packet of a RELATED connection), by listings and by
// the owner serving a links request: never per packet.
var linkRegistry struct {
	mu sync.Mutex
	m  map[weak.Pointer[Shard]]*childLinks
}

// childLinks returns the shard's links; with create false, nil when the
// shard never had a child.
func (s *Shard) childLinks(create bool) *childLinks {
	k := weak.Make(s)
	linkRegistry.mu.Lock()
	defer linkRegistry.mu.Unlock()
	l := linkRegistry.m[k]
	if l == nil && create {
		if linkRegistry.m == nil {
			linkRegistry.m = make(map[weak.Pointer[Shard]]*childLinks)
		}
		l = new(childLinks)
		linkRegistry.m[k] = l
		runtime.AddCleanup(s, func(k weak.Pointer[Shard]) {
			linkRegistry.mu.Lock()
			delete(linkRegistry.m, k)
			linkRegistry.mu.Unlock()
		}, k)
	}
	return l
}
