// Command tlog_verifier is the independent check of svc-registry's transparency log (SPEC §12):
// everything it asserts is computed by Go's golang.org/x/mod/sumdb/note and sumdb/tlog packages
// (Debian's golang-golang-x-mod-dev), none of it by code of this project.
//
// Invariant: every hash, proof, tile and signature it accepts was recomputed or verified here by
// Go's packages from inputs it fetched itself (the `hash` of each /registry/{v}); anything the
// server says is only ever compared, never trusted. Any mismatch exits 1 with a message naming it.
//
// Subcommands:
//
//	vectors                         print tests/vectors/tlog.json (deterministic, fixed inputs)
//	check URL VKEY [flags]          verify a live server (see cmdCheck's flags)
//	prove URL VKEY VERSION OUT      write a C2SP tlog-proof of VERSION made by tlog.ProveRecord
//	                                over the server's records, for the server's own checker
//	keyfile FILE VKEY               a log key file loads with note.NewSigner, is the key of
//	                                VKEY, and its signatures open with note.Open
//	selftest                        run `check` against an in-process server made of Go's own
//	                                proofs over the vector inputs, then against tampered
//	                                variants of it, each of which must be refused
//
// Build offline in GOPATH mode: GO111MODULE=off GOPATH=<tmp>:/usr/share/gocode go build .
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// tileHeight is C2SP tlog-tiles' fixed height: 256 hashes per full tile.
const tileHeight = 8

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "vectors":
		err = cmdVectors(os.Stdout)
	case "check":
		err = cmdCheck(os.Args[2:])
	case "prove":
		err = cmdProve(os.Args[2:])
	case "keyfile":
		err = cmdKeyfile(os.Args[2:])
	case "selftest":
		err = cmdSelftest()
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tlog_verifier %s: FAIL: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: tlog_verifier vectors | check URL VKEY [-old FILE] [-save FILE] [-proof FILE] [-seed N] [-samples N] | prove URL VKEY VERSION OUT | keyfile FILE VKEY | selftest")
	os.Exit(2)
}

// ---------------------------------------------------------------------------------------------
// Hash storage: the leaves (hash_V) and Go's "stored hashes" of the tree over them.

// hashStore holds tlog's stored hashes of a tree built leaf by leaf with tlog.StoredHashes.
type hashStore struct {
	leaves [][]byte // leaf data: the 32 raw bytes of hash_V
	stored []tlog.Hash
}

func (s *hashStore) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(s.stored)) {
			return nil, fmt.Errorf("stored hash %d not held (have %d)", x, len(s.stored))
		}
		out[i] = s.stored[x]
	}
	return out, nil
}

func (s *hashStore) add(leaf []byte) error {
	hs, err := tlog.StoredHashes(int64(len(s.leaves)), leaf, s)
	if err != nil {
		return err
	}
	s.leaves = append(s.leaves, leaf)
	s.stored = append(s.stored, hs...)
	return nil
}

func newStore(leaves [][]byte) (*hashStore, error) {
	s := &hashStore{}
	for _, l := range leaves {
		if err := s.add(l); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *hashStore) root(size int64) (tlog.Hash, error) {
	if size < 1 || size > int64(len(s.leaves)) {
		return tlog.Hash{}, fmt.Errorf("tree size %d outside 1..%d", size, len(s.leaves))
	}
	return tlog.TreeHash(size, s)
}

// c2spTilePath is the C2SP tlog-tiles path of t: Go's Tile.Path() also names the height
// ("tile/8/0/000"), C2SP's fixes it at 8 and leaves it out ("tile/0/000").
func c2spTilePath(t tlog.Tile) string {
	return "tile/" + strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/", tileHeight))
}

// goTilePath is the inverse of c2spTilePath, for tlog.ParseTilePath.
func goTilePath(p string) (tlog.Tile, error) {
	rest := strings.TrimPrefix(p, "tile/")
	if rest == p {
		return tlog.Tile{}, fmt.Errorf("not a tile path: %q", p)
	}
	return tlog.ParseTilePath(fmt.Sprintf("tile/%d/%s", tileHeight, rest))
}

// tilesFor lists the tiles a tree of `size` leaves is served as, C2SP-wise: every full tile
// and, at each level, the partial one on the right edge (tlog.NewTiles from 0 lists every
// width of each partial tile; only the widest belongs to this size).
func tilesFor(size int64) []tlog.Tile {
	all := tlog.NewTiles(tileHeight, 0, size)
	var out []tlog.Tile
	for i, t := range all {
		if t.W < 1<<tileHeight && i+1 < len(all) && all[i+1].L == t.L && all[i+1].N == t.N {
			continue // a narrower width of the same edge tile
		}
		out = append(out, t)
	}
	return out
}

func b64s(hs []tlog.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out
}

func parseHashes(in []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(in))
	for i, s := range in {
		h, err := tlog.ParseHash(s)
		if err != nil {
			return nil, fmt.Errorf("hash %d %q: %v", i, s, err)
		}
		out[i] = h
	}
	return out, nil
}

// ---------------------------------------------------------------------------------------------
// vectors

// The vector inputs: hash_V = SHA-256("v" || decimal V) for V in 0..vectorLeaves, which gives a
// full level-0 tile, a partial one, and a partial level-1 tile.
const vectorLeaves = 300

// The origin (and key name) of the vector note: what a server with registry_id
// "test-registry" uses by default.
const vectorOrigin = "svc-registry/test-registry"

var vectorRootSizes = []int64{1, 2, 3, 7, 8, 255, 256, 257, 300}

var vectorInclusion = [][2]int64{ // {index, size}
	{0, 1}, {0, 2}, {1, 2}, {2, 3}, {6, 7}, {3, 8}, {0, 255}, {254, 255}, {255, 256},
	{256, 257}, {0, 300}, {100, 300}, {255, 300}, {256, 300}, {299, 300},
}

var vectorConsistency = [][2]int64{ // {old, new}
	{1, 2}, {1, 3}, {2, 3}, {3, 7}, {4, 8}, {7, 8}, {8, 255}, {255, 256}, {256, 257},
	{1, 300}, {100, 300}, {255, 300}, {256, 300}, {257, 300}, {299, 300},
}

// The tree sizes whose tiles are in the vectors: one partial level-0 tile only (5), a full tile
// and the first leaf of the next plus a level-1 tile (257), the vector tree itself (300).
var vectorTileSizes = []int64{5, 257, 300}

type inclusionVec struct {
	Index int64    `json:"index"`
	Size  int64    `json:"size"`
	Proof []string `json:"proof"`
}

type consistencyVec struct {
	Old   int64    `json:"old"`
	New   int64    `json:"new"`
	Proof []string `json:"proof"`
}

type noteVec struct {
	Skey   string `json:"skey"`
	Vkey   string `json:"vkey"`
	Text   string `json:"text"`
	Signed string `json:"signed"`
}

type tileVec struct {
	Path string `json:"path"`
	Hex  string `json:"hex"`
}

type vectorFile struct {
	LeafHashesInput []string          `json:"leaf_hashes_input"`
	Roots           map[string]string `json:"roots"`
	Inclusion       []inclusionVec    `json:"inclusion"`
	Consistency     []consistencyVec  `json:"consistency"`
	Note            noteVec           `json:"note"`
	Tiles           []tileVec         `json:"tiles"`
}

func vectorLeafData() [][]byte {
	out := make([][]byte, vectorLeaves)
	for i := range out {
		h := sha256.Sum256([]byte("v" + strconv.Itoa(i)))
		out[i] = h[:]
	}
	return out
}

// seedReader yields SHA-256("tlog vectors key seed" || counter) blocks: a fixed "random" source
// so note.GenerateKey makes the same key on every run.
type seedReader struct {
	buf []byte
	ctr uint64
}

func (r *seedReader) Read(p []byte) (int, error) {
	for len(r.buf) < len(p) {
		h := sha256.Sum256([]byte(fmt.Sprintf("tlog vectors key seed %d", r.ctr)))
		r.ctr++
		r.buf = append(r.buf, h[:]...)
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func vectorKey() (skey, vkey string, err error) {
	return note.GenerateKey(&seedReader{}, vectorOrigin)
}

func checkpointText(origin string, size int64, root tlog.Hash) string {
	return fmt.Sprintf("%s\n%d\n%s\n", origin, size, root)
}

func signNote(skey, text string) ([]byte, error) {
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, err
	}
	return note.Sign(&note.Note{Text: text}, s)
}

func makeVectors() (*vectorFile, error) {
	leaves := vectorLeafData()
	st, err := newStore(leaves)
	if err != nil {
		return nil, err
	}
	v := &vectorFile{Roots: map[string]string{}}
	for _, l := range leaves {
		v.LeafHashesInput = append(v.LeafHashesInput, hex.EncodeToString(l))
	}
	for _, n := range vectorRootSizes {
		r, err := st.root(n)
		if err != nil {
			return nil, err
		}
		v.Roots[strconv.FormatInt(n, 10)] = r.String()
	}
	for _, c := range vectorInclusion {
		p, err := tlog.ProveRecord(c[1], c[0], st)
		if err != nil {
			return nil, fmt.Errorf("ProveRecord(%d, %d): %v", c[1], c[0], err)
		}
		v.Inclusion = append(v.Inclusion, inclusionVec{Index: c[0], Size: c[1], Proof: b64s(p)})
	}
	for _, c := range vectorConsistency {
		p, err := tlog.ProveTree(c[1], c[0], st)
		if err != nil {
			return nil, fmt.Errorf("ProveTree(%d, %d): %v", c[1], c[0], err)
		}
		v.Consistency = append(v.Consistency, consistencyVec{Old: c[0], New: c[1], Proof: b64s(p)})
	}
	skey, vkey, err := vectorKey()
	if err != nil {
		return nil, err
	}
	root, _ := st.root(vectorLeaves)
	text := checkpointText(vectorOrigin, vectorLeaves, root)
	signed, err := signNote(skey, text)
	if err != nil {
		return nil, err
	}
	v.Note = noteVec{Skey: skey, Vkey: vkey, Text: text, Signed: string(signed)}
	seen := map[string]bool{}
	for _, n := range vectorTileSizes {
		for _, t := range tilesFor(n) {
			p := c2spTilePath(t)
			if seen[p] {
				continue
			}
			seen[p] = true
			data, err := tlog.ReadTileData(t, st)
			if err != nil {
				return nil, fmt.Errorf("ReadTileData(%s): %v", p, err)
			}
			v.Tiles = append(v.Tiles, tileVec{Path: p, Hex: hex.EncodeToString(data)})
		}
	}
	return v, nil
}

func cmdVectors(w io.Writer) error {
	v, err := makeVectors()
	if err != nil {
		return err
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(out, '\n'))
	return err
}

// ---------------------------------------------------------------------------------------------
// check

type checkConfig struct {
	base    string // e.g. http://127.0.0.1:9444 (the /registry/... routes hang off it)
	vkey    string
	old     string // a checkpoint saved by an earlier run (-save): prove the log extends it
	save    string // where to save the checkpoint verified by this run
	proof   string // a C2SP tlog-proof file (ronctl registry prove)
	seed    int64
	samples int
	out     io.Writer
}

func cmdCheck(args []string) error {
	if len(args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	c := checkConfig{base: strings.TrimRight(args[0], "/"), vkey: strings.TrimSpace(args[1]), out: os.Stdout}
	fs.StringVar(&c.old, "old", "", "an earlier checkpoint (as saved by -save): check consistency with it")
	fs.StringVar(&c.save, "save", "", "save the verified checkpoint to this file")
	fs.StringVar(&c.proof, "proof", "", "a C2SP tlog-proof file to verify")
	fs.Int64Var(&c.seed, "seed", 1, "seed of the random versions and sizes asked for proofs")
	fs.IntVar(&c.samples, "samples", 64, "how many random inclusion and consistency proofs")
	if err := fs.Parse(args[2:]); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return runCheck(c)
}

type fetcher struct {
	base   string
	client *http.Client
}

// get fetches base+path and insists on 200; returns the body and the response's headers.
func (f *fetcher) get(path string) ([]byte, http.Header, error) {
	resp, err := f.client.Get(f.base + path)
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<24))
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: reading the body: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET %s: status %d: %.300s", path, resp.StatusCode, body)
	}
	return body, resp.Header, nil
}

func (f *fetcher) proof(path string) ([]tlog.Hash, error) {
	body, _, err := f.get(path)
	if err != nil {
		return nil, err
	}
	var p struct {
		Hashes *[]string `json:"hashes"`
	}
	if err := json.Unmarshal(body, &p); err != nil || p.Hashes == nil {
		return nil, fmt.Errorf("GET %s: not {\"hashes\":[...]}: %.300s", path, body)
	}
	hs, err := parseHashes(*p.Hashes)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %v", path, err)
	}
	return hs, nil
}

type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
	raw    []byte // the signed note, verbatim
}

// openCheckpoint verifies the signed note with the pinned verifier key (note.Open) and parses its
// text as a C2SP tlog-checkpoint: origin, decimal size without leading zeros, base64 root, then
// optional extension lines. The key name must be the origin (SPEC §12).
func openCheckpoint(raw []byte, v note.Verifier) (*checkpoint, error) {
	n, err := note.Open(raw, note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("signed note does not verify with the vkey: %v\n%s", err, raw)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return nil, fmt.Errorf("checkpoint text is not origin, size, root lines: %q", n.Text)
	}
	cp := &checkpoint{origin: lines[0], raw: raw}
	if cp.origin == "" || cp.origin != v.Name() {
		return nil, fmt.Errorf("checkpoint origin %q is not the key name %q", cp.origin, v.Name())
	}
	cp.size, err = strconv.ParseInt(lines[1], 10, 64)
	if err != nil || cp.size < 0 || lines[1] != strconv.FormatInt(cp.size, 10) {
		return nil, fmt.Errorf("checkpoint size line %q is not a canonical decimal", lines[1])
	}
	cp.root, err = tlog.ParseHash(lines[2])
	if err != nil {
		return nil, fmt.Errorf("checkpoint root line %q: %v", lines[2], err)
	}
	return cp, nil
}

func runCheck(c checkConfig) error {
	logf := func(format string, a ...interface{}) { fmt.Fprintf(c.out, "ok "+format+"\n", a...) }
	verifier, err := note.NewVerifier(c.vkey)
	if err != nil {
		return fmt.Errorf("vkey %q: %v", c.vkey, err)
	}
	f := &fetcher{base: c.base, client: &http.Client{Timeout: 15 * time.Second}}

	cp, st, err := fetchTree(f, verifier)
	if err != nil {
		return err
	}
	logf("checkpoint signature (note.Open) origin=%s size=%d root=%s", cp.origin, cp.size, cp.root)
	logf("tree hash (tlog.TreeHash over %d records) equals the checkpoint root", cp.size)

	// The key the server publishes is the one pinned out of band (checked after the signature,
	// so that a foreign pinned key is refused by note.Open itself).
	body, _, err := f.get("/registry/vkey")
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(string(body)); got != c.vkey {
		return fmt.Errorf("GET /registry/vkey = %q, the pinned vkey is %q", got, c.vkey)
	}

	// Tiles: each byte as tlog.ReadTileData lays it out from our own stored hashes.
	tiles := tilesFor(cp.size)
	for _, t := range tiles {
		p := c2spTilePath(t)
		got, hdr, err := f.get("/registry/" + p)
		if err != nil {
			return err
		}
		want, err := tlog.ReadTileData(t, st)
		if err != nil {
			return fmt.Errorf("ReadTileData(%s): %v", p, err)
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("tile %s: %d bytes differ from tlog.ReadTileData's %d", p, len(got), len(want))
		}
		if ct := hdr.Get("Content-Type"); ct != "application/octet-stream" {
			return fmt.Errorf("tile %s: Content-Type %q, C2SP tlog-tiles says application/octet-stream", p, ct)
		}
		full := t.W == 1<<tileHeight
		if cc := hdr.Get("Cache-Control"); full != strings.Contains(cc, "immutable") {
			return fmt.Errorf("tile %s (full: %v): Cache-Control %q (full tiles are immutable, partial ones are not)", p, full, cc)
		}
		// Only the tiles of this checkpoint's size are asked: C2SP lets a log delete other
		// partial tiles once the full one exists.
	}
	var names []string
	for _, t := range tiles {
		if len(names) == 8 {
			names = append(names, "...")
			break
		}
		names = append(names, c2spTilePath(t))
	}
	logf("%d tiles byte for byte (tlog.ReadTileData): %s", len(tiles), strings.Join(names, " "))

	// Inclusion proofs for random versions in random tree sizes, plus the edges.
	rng := rand.New(rand.NewSource(c.seed))
	type pair struct{ a, b int64 }
	incl := []pair{{0, cp.size}, {cp.size - 1, cp.size}, {0, 1}}
	for i := 0; i < c.samples; i++ {
		size := 1 + rng.Int63n(cp.size)
		incl = append(incl, pair{rng.Int63n(size), size})
	}
	for _, p := range incl {
		proof, err := f.proof(fmt.Sprintf("/registry/proof/inclusion?version=%d&size=%d", p.a, p.b))
		if err != nil {
			return err
		}
		th, err := st.root(p.b)
		if err != nil {
			return err
		}
		if err := tlog.CheckRecord(proof, p.b, th, p.a, tlog.RecordHash(st.leaves[p.a])); err != nil {
			return fmt.Errorf("inclusion of version %d in size %d (proof %v): tlog.CheckRecord: %v", p.a, p.b, b64s(proof), err)
		}
	}
	logf("%d inclusion proofs (tlog.CheckRecord), seed %d", len(incl), c.seed)

	// RFC 6962 and 9162 define consistency proofs for 0 < old < new only, so only those are
	// asked (a tree of size 1 has none).
	var cons []pair
	if cp.size >= 2 {
		cons = append(cons, pair{1, cp.size}, pair{cp.size - 1, cp.size})
		for i := 0; i < c.samples; i++ {
			n := 2 + rng.Int63n(cp.size-1)
			cons = append(cons, pair{1 + rng.Int63n(n-1), n})
		}
	}
	for _, p := range cons {
		proof, err := f.proof(fmt.Sprintf("/registry/proof/consistency?old=%d&new=%d", p.a, p.b))
		if err != nil {
			return err
		}
		oldRoot, _ := st.root(p.a)
		newRoot, _ := st.root(p.b)
		if err := tlog.CheckTree(proof, p.b, newRoot, p.a, oldRoot); err != nil {
			return fmt.Errorf("consistency of size %d with size %d (proof %v): tlog.CheckTree: %v", p.a, p.b, b64s(proof), err)
		}
	}
	logf("%d consistency proofs (tlog.CheckTree)", len(cons))

	if c.old != "" {
		raw, err := os.ReadFile(c.old)
		if err != nil {
			return err
		}
		old, err := openCheckpoint(raw, verifier)
		if err != nil {
			return fmt.Errorf("old checkpoint %s: %v", c.old, err)
		}
		switch {
		case old.size > cp.size:
			return fmt.Errorf("the log shrank: old checkpoint size %d, now %d", old.size, cp.size)
		case old.size == cp.size:
			// Same size, so nothing to prove: the roots must simply be equal.
			if old.root != cp.root {
				return fmt.Errorf("checkpoint %d is not consistent with the old checkpoint %d: two roots for one size", cp.size, old.size)
			}
		default:
			proof, err := f.proof(fmt.Sprintf("/registry/proof/consistency?old=%d&new=%d", old.size, cp.size))
			if err != nil {
				return err
			}
			// Between the two signed roots alone: what a witness holding only the old
			// checkpoint checks.
			if err := tlog.CheckTree(proof, cp.size, cp.root, old.size, old.root); err != nil {
				return fmt.Errorf("checkpoint %d is not consistent with the old checkpoint %d: tlog.CheckTree: %v", cp.size, old.size, err)
			}
		}
		logf("checkpoint %d extends the old checkpoint %d (tlog.CheckTree between signed roots)", cp.size, old.size)
	}

	if c.proof != "" {
		raw, err := os.ReadFile(c.proof)
		if err != nil {
			return err
		}
		if err := checkProofFile(raw, verifier, st); err != nil {
			return fmt.Errorf("tlog-proof %s: %v", c.proof, err)
		}
		logf("tlog-proof file %s (note.Open + tlog.CheckRecord)", c.proof)
	}

	if c.save != "" {
		if err := os.WriteFile(c.save, cp.raw, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// checkProofFile verifies a C2SP tlog-proof (c2sp.org/tlog-proof@v1): optional `extra` line,
// `index N`, the inclusion proof one base64 hash a line, an empty line, then the checkpoint
// verbatim. The leaf is hash_V of version N as fetched from the server (in st).
func checkProofFile(raw []byte, v note.Verifier, st *hashStore) error {
	text := string(raw)
	head, cpText, ok := strings.Cut(text, "\n\n")
	if !ok {
		return errors.New("no empty line before the checkpoint")
	}
	lines := strings.Split(head, "\n")
	if lines[0] != "c2sp.org/tlog-proof@v1" {
		return fmt.Errorf("first line %q is not c2sp.org/tlog-proof@v1", lines[0])
	}
	lines = lines[1:]
	var extra []byte
	if len(lines) > 0 && strings.HasPrefix(lines[0], "extra ") {
		var err error
		extra, err = base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[0], "extra "))
		if err != nil {
			return fmt.Errorf("extra line is not base64: %v", err)
		}
		lines = lines[1:]
	}
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "index ") {
		return errors.New("no index line")
	}
	is := strings.TrimPrefix(lines[0], "index ")
	index, err := strconv.ParseInt(is, 10, 64)
	if err != nil || index < 0 || is != strconv.FormatInt(index, 10) {
		return fmt.Errorf("index %q is not a canonical decimal", is)
	}
	proof, err := parseHashes(lines[1:])
	if err != nil {
		return fmt.Errorf("inclusion proof: %v", err)
	}
	cp, err := openCheckpoint([]byte(cpText), v)
	if err != nil {
		return fmt.Errorf("its checkpoint: %v", err)
	}
	if cp.size > int64(len(st.leaves)) {
		return fmt.Errorf("its checkpoint size %d is beyond the %d records fetched", cp.size, len(st.leaves))
	}
	if index >= cp.size {
		return fmt.Errorf("index %d is outside its checkpoint's size %d", index, cp.size)
	}
	if root, _ := st.root(cp.size); root != cp.root {
		return fmt.Errorf("its checkpoint root %s is not the tree hash %s of the first %d records", cp.root, root, cp.size)
	}
	// This log's extra data is the record's hash_V (docs/FORMATS.md): not trusted, compared.
	if extra != nil && !bytes.Equal(extra, st.leaves[index]) {
		return fmt.Errorf("extra %x is not hash_V %x of version %d", extra, st.leaves[index], index)
	}
	if err := tlog.CheckRecord(proof, cp.size, cp.root, index, tlog.RecordHash(st.leaves[index])); err != nil {
		return fmt.Errorf("inclusion of version %d in its checkpoint (size %d): tlog.CheckRecord: %v", index, cp.size, err)
	}
	return nil
}

// formatProof lays out a C2SP tlog-proof: magic, `extra` (this log's: base64 of hash_V),
// `index`, the proof hashes, an empty line, the checkpoint verbatim.
func formatProof(leaf []byte, index int64, proof []tlog.Hash, checkpoint []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "c2sp.org/tlog-proof@v1\nextra %s\nindex %d\n", base64.StdEncoding.EncodeToString(leaf), index)
	for _, h := range proof {
		fmt.Fprintf(&b, "%s\n", h)
	}
	b.WriteString("\n")
	b.Write(checkpoint)
	return b.Bytes()
}

// fetchTree fetches and opens the checkpoint, then every /registry/{v} below its size (leaf V is
// the 32 raw bytes of hash_V), and insists that tlog.TreeHash over them is its root.
func fetchTree(f *fetcher, verifier note.Verifier) (*checkpoint, *hashStore, error) {
	raw, hdr, err := f.get("/registry/checkpoint")
	if err != nil {
		return nil, nil, err
	}
	if ct := hdr.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		return nil, nil, fmt.Errorf("checkpoint Content-Type %q, C2SP tlog-tiles says text/plain; charset=utf-8", ct)
	}
	cp, err := openCheckpoint(raw, verifier)
	if err != nil {
		return nil, nil, err
	}
	if cp.size < 1 {
		return nil, nil, fmt.Errorf("checkpoint size %d: the registry always holds genesis", cp.size)
	}
	st := &hashStore{}
	for v := int64(0); v < cp.size; v++ {
		body, _, err := f.get(fmt.Sprintf("/registry/%d", v))
		if err != nil {
			return nil, nil, err
		}
		var rec struct {
			Version *int64 `json:"version"`
			Hash    string `json:"hash"`
		}
		if err := json.Unmarshal(body, &rec); err != nil || rec.Version == nil || *rec.Version != v {
			return nil, nil, fmt.Errorf("GET /registry/%d: not the record of version %d: %.200s", v, v, body)
		}
		leaf, err := hex.DecodeString(rec.Hash)
		if err != nil || len(leaf) != 32 {
			return nil, nil, fmt.Errorf("GET /registry/%d: hash %q is not 32 bytes of hex", v, rec.Hash)
		}
		if err := st.add(leaf); err != nil {
			return nil, nil, err
		}
	}
	root, err := st.root(cp.size)
	if err != nil {
		return nil, nil, err
	}
	if root != cp.root {
		return nil, nil, fmt.Errorf("checkpoint root %s, but tlog.TreeHash over the %d /registry/{v} hashes is %s", cp.root, cp.size, root)
	}
	return cp, st, nil
}

func cmdProve(args []string) error {
	if len(args) != 4 {
		usage()
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(args[1]))
	if err != nil {
		return fmt.Errorf("vkey %q: %v", args[1], err)
	}
	index, err := strconv.ParseInt(args[2], 10, 64)
	if err != nil {
		return fmt.Errorf("version %q: %v", args[2], err)
	}
	f := &fetcher{base: strings.TrimRight(args[0], "/"), client: &http.Client{Timeout: 15 * time.Second}}
	cp, st, err := fetchTree(f, verifier)
	if err != nil {
		return err
	}
	if index < 0 || index >= cp.size {
		return fmt.Errorf("version %d is outside the checkpoint's size %d", index, cp.size)
	}
	proof, err := tlog.ProveRecord(cp.size, index, st)
	if err != nil {
		return err
	}
	return os.WriteFile(args[3], formatProof(st.leaves[index], index, proof, cp.raw), 0o644)
}

func cmdKeyfile(args []string) error {
	if len(args) != 2 {
		usage()
	}
	raw, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	signer, err := note.NewSigner(strings.TrimSpace(string(raw)))
	if err != nil {
		return fmt.Errorf("note.NewSigner(%s): %v", args[0], err)
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(args[1]))
	if err != nil {
		return fmt.Errorf("vkey %q: %v", args[1], err)
	}
	if signer.Name() != verifier.Name() || signer.KeyHash() != verifier.KeyHash() {
		return fmt.Errorf("key file is %s+%08x, the vkey %s+%08x", signer.Name(), signer.KeyHash(), verifier.Name(), verifier.KeyHash())
	}
	signed, err := note.Sign(&note.Note{Text: "tlog_verifier keyfile check\n"}, signer)
	if err != nil {
		return err
	}
	if _, err := note.Open(signed, note.VerifierList(verifier)); err != nil {
		return fmt.Errorf("a note signed with the key file does not open with the vkey: %v", err)
	}
	fmt.Printf("ok key file %s is the key of %s (note.NewSigner, note.Sign, note.Open)\n", args[0], verifier.Name())
	return nil
}

// ---------------------------------------------------------------------------------------------
// selftest: an in-process log made of Go's own ProveRecord / ProveTree / ReadTileData over the
// vector inputs, serving the routes of SPEC §12 as the registry does. `check` must accept it and
// refuse each tampered variant: that shows the checks can fail, before a real server exists.

type mockLog struct {
	mu      sync.Mutex
	st      *hashStore
	size    int64
	skey    string
	vkey    string
	tamper  string
	forkSt  *hashStore // with tamper "fork" the history served past size 257, with "split" always
	origin  string
	otherSk string
}

func (m *mockLog) store() *hashStore {
	if m.tamper == "fork" && m.size > 257 || m.tamper == "split" {
		return m.forkSt
	}
	return m.st
}

func writeProof(w http.ResponseWriter, hs []tlog.Hash, err error) {
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	out, _ := json.Marshal(map[string][]string{"hashes": b64s(hs)})
	w.Write(out)
}

func flip(b []byte, i int) { b[i%len(b)] ^= 1 }

func (m *mockLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.store()
	p := strings.TrimPrefix(r.URL.Path, "/registry/")
	q := r.URL.Query()
	num := func(k string) int64 {
		n, err := strconv.ParseInt(q.Get(k), 10, 64)
		if err != nil {
			return -1
		}
		return n
	}
	switch {
	case p == "vkey":
		fmt.Fprintln(w, m.vkey)
	case p == "checkpoint":
		root, _ := st.root(m.size)
		if m.tamper == "root" {
			flip(root[:], 0)
		}
		skey := m.skey
		if m.tamper == "sig" {
			skey = m.otherSk
		}
		signed, err := signNote(skey, checkpointText(m.origin, m.size, root))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(signed)
	case strings.HasPrefix(p, "tile/"):
		t, err := goTilePath(p)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// Serve nothing beyond the published size.
		if (t.N<<tileHeight+int64(t.W))<<(uint(t.L)*tileHeight) > m.size {
			http.NotFound(w, r)
			return
		}
		data, err := tlog.ReadTileData(t, st)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		if m.tamper == "tile" && t.L == 0 && t.W == 1<<tileHeight {
			flip(data, 4000)
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		if t.W == 1<<tileHeight {
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			w.Header().Set("Cache-Control", "no-cache")
		}
		w.Write(data)
	case p == "proof/inclusion":
		v, n := num("version"), num("size")
		if n > m.size {
			http.NotFound(w, r)
			return
		}
		hs, err := tlog.ProveRecord(n, v, st)
		if m.tamper == "inclusion" && err == nil && len(hs) > 2 {
			flip(hs[len(hs)-1][:], 7)
		}
		writeProof(w, hs, err)
	case p == "proof/consistency":
		o, n := num("old"), num("new")
		if n > m.size {
			http.NotFound(w, r)
			return
		}
		hs, err := tlog.ProveTree(n, o, st)
		if m.tamper == "consistency" && err == nil && len(hs) > 2 {
			flip(hs[1][:], 3)
		}
		writeProof(w, hs, err)
	default:
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil || v < 0 || v >= m.size {
			http.NotFound(w, r)
			return
		}
		leaf := append([]byte(nil), st.leaves[v]...)
		if m.tamper == "record" && v == 42 {
			flip(leaf, 0)
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"version":%d,"hash":"%s","prev_hash":"%s"}`, v, hex.EncodeToString(leaf), strings.Repeat("0", 64))
	}
}

// proofFile writes the C2SP tlog-proof of leaf `index` in the mock's current checkpoint.
func (m *mockLog) proofFile(base string, index int64) ([]byte, error) {
	f := &fetcher{base: base, client: http.DefaultClient}
	cp, _, err := f.get("/registry/checkpoint")
	if err != nil {
		return nil, err
	}
	hs, err := tlog.ProveRecord(m.size, index, m.st)
	if err != nil {
		return nil, err
	}
	return formatProof(m.st.leaves[index], index, hs, cp), nil
}

func cmdSelftest() error {
	leaves := vectorLeafData()
	st, err := newStore(leaves)
	if err != nil {
		return err
	}
	forked := append([][]byte(nil), leaves...)
	forked[100] = make([]byte, 32) // a different history below the old checkpoint's size
	forkSt, err := newStore(forked)
	if err != nil {
		return err
	}
	skey, vkey, err := vectorKey()
	if err != nil {
		return err
	}
	otherSk, _, err := note.GenerateKey(&seedReader{ctr: 1000}, vectorOrigin)
	if err != nil {
		return err
	}
	m := &mockLog{st: st, forkSt: forkSt, skey: skey, vkey: vkey, otherSk: otherSk, origin: vectorOrigin}
	srv := httptest.NewServer(m)
	defer srv.Close()
	dir, err := os.MkdirTemp("", "tlog-selftest")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	oldCp := dir + "/old.checkpoint"
	proofPath := dir + "/v.tlog-proof"
	set := func(size int64, tamper string) {
		m.mu.Lock()
		m.size, m.tamper = size, tamper
		m.mu.Unlock()
	}
	quiet := io.Discard
	cfg := func() checkConfig {
		return checkConfig{base: srv.URL, vkey: vkey, seed: 7, samples: 24, out: quiet}
	}

	// The honest log at size 257, saved; then at 300, consistent with it, with a proof file.
	set(257, "")
	c := cfg()
	c.save, c.out = oldCp, os.Stdout
	if err := runCheck(c); err != nil {
		return fmt.Errorf("honest log at 257 refused: %v", err)
	}
	set(300, "")
	pf, err := m.proofFile(srv.URL, 123)
	if err != nil {
		return err
	}
	if err := os.WriteFile(proofPath, pf, 0o644); err != nil {
		return err
	}
	c = cfg()
	c.old, c.proof, c.out = oldCp, proofPath, os.Stdout
	if err := runCheck(c); err != nil {
		return fmt.Errorf("honest log at 300 refused: %v", err)
	}

	// Each lie must be caught, with a message naming what it is.
	cases := []struct {
		size         int64
		tamper, want string
	}{
		{300, "sig", "does not verify with the vkey"},
		{300, "root", "tlog.TreeHash"},
		{300, "record", "tlog.TreeHash"},
		{300, "tile", "tile tile/0/000"},
		{300, "inclusion", "tlog.CheckRecord"},
		{300, "consistency", "tlog.CheckTree"},
		{300, "fork", "not consistent with the old checkpoint 257: tlog.CheckTree"},
		{257, "split", "two roots for one size"},
	}
	for _, tc := range cases {
		set(tc.size, tc.tamper)
		c := cfg()
		c.old = oldCp
		err := runCheck(c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			return fmt.Errorf("tampered %q: want an error containing %q, got %v", tc.tamper, tc.want, err)
		}
		fmt.Printf("ok refused tampered %s: %.160s\n", tc.tamper, err)
	}

	// A proof file for another index, or with a flipped hash, is refused.
	set(300, "")
	bad := map[string][]byte{
		"index": bytes.Replace(pf, []byte("index 123\n"), []byte("index 124\n"), 1),
		"extra": bytes.Replace(pf, []byte(base64.StdEncoding.EncodeToString(leaves[123])), []byte(base64.StdEncoding.EncodeToString(leaves[124])), 1),
		"hash":  bytes.Replace(pf, []byte("index 123\n"), []byte("index 123\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"), 1),
		"magic": bytes.Replace(pf, []byte("@v1"), []byte("@v2"), 1),
	}
	names := make([]string, 0, len(bad))
	for k := range bad {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := os.WriteFile(proofPath, bad[name], 0o644); err != nil {
			return err
		}
		c := cfg()
		c.proof = proofPath
		if err := runCheck(c); err == nil || !strings.Contains(err.Error(), "tlog-proof") {
			return fmt.Errorf("tampered proof file (%s): want a tlog-proof error, got %v", name, err)
		}
		fmt.Printf("ok refused tampered proof file (%s)\n", name)
	}

	// The mock's answers are the vectors' (one source of truth for both).
	v, err := makeVectors()
	if err != nil {
		return err
	}
	if v.Roots["300"] != mustRoot(st, 300).String() {
		return errors.New("vector root 300 differs from the mock's")
	}
	fmt.Println("selftest: PASS")
	return nil
}

func mustRoot(st *hashStore, n int64) tlog.Hash {
	r, err := st.root(n)
	if err != nil {
		panic(err)
	}
	return r
}
