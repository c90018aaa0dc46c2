package whisper

import (
	"container/list"
	"time"
)

// cache is a least-recently-used cache of decoded whispers by URL,
// bounded by entries and by bytes of samples, whose entries expire. It is
// not safe for concurrent use: Fetcher holds its lock around it.
type cache struct {
	maxEntries int
	maxBytes   int64
	ttl        time.Duration
	ll         *list.List // of *cacheEntry, most recently used first
	items      map[string]*list.Element
	bytes      int64
}

type cacheEntry struct {
	key     string
	audio   Audio
	size    int64
	expires time.Time
}

func newCache(maxEntries int, maxBytes int64, ttl time.Duration) *cache {
	return &cache{maxEntries: maxEntries, maxBytes: maxBytes, ttl: ttl, ll: list.New(), items: make(map[string]*list.Element)}
}

// get returns the audio cached for key unless it expired (then it is
// dropped).
func (c *cache) get(key string, now time.Time) (Audio, bool) {
	el, ok := c.items[key]
	if !ok {
		return Audio{}, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.remove(el)
		return Audio{}, false
	}
	c.ll.MoveToFront(el)
	return e.audio, true
}

// add caches a for key, then drops the least recently used entries until
// both bounds hold. Audio larger than the byte bound is not cached.
func (c *cache) add(key string, a Audio, now time.Time) {
	size := int64(len(a.Samples)) * 2
	if c.maxEntries <= 0 || size > c.maxBytes {
		return
	}
	if el, ok := c.items[key]; ok {
		c.remove(el)
	}
	c.items[key] = c.ll.PushFront(&cacheEntry{key: key, audio: a, size: size, expires: now.Add(c.ttl)})
	c.bytes += size
	for c.ll.Len() > c.maxEntries || c.bytes > c.maxBytes {
		c.remove(c.ll.Back())
	}
}

func (c *cache) remove(el *list.Element) {
	e := c.ll.Remove(el).(*cacheEntry)
	delete(c.items, e.key)
	c.bytes -= e.size
}

// len is the number of entries and their bytes.
func (c *cache) len() (int, int64) { return c.ll.Len(), c.bytes }
