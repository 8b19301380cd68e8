package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/connectd/connectd/core/session"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/encryption"
	"github.com/connectd/connectd/server/keys"
	"github.com/connectd/connectd/server/logging"
)

const keysHelp = `Usage: connectd keys generate
       connectd keys add     [--ring encryption|session]
       connectd keys promote ID [--ring encryption|session]
       connectd keys rotate  [--batch 500]
       connectd keys status
       connectd keys remove  ID [--ring encryption|session] [--force]

Key rotation, online, in this order (see the README, "Key rotation"):
  1. keys add        a new key as a NON-primary entry; restart every replica
  2. keys promote ID make it the primary everywhere; restart every replica
  3. keys rotate     re-seal every stored value under the primary, in batches,
                     while replicas keep serving (resumable: just run it again)
  4. keys remove ID  drop the old key; refused while any value still uses it
add, promote and remove rewrite <data dir>/keys.env when the ring comes from
that file; when it comes from the environment they print the new value to
deploy (CONNECTD_..._KEYS=...) on stdout instead. Session signing keys have
nothing to re-seal: an old session key verifies until its tokens expire
(at most CONNECTD_SESSION_TTL after every replica promoted the new key).
keys status prints the keys of both rings and how many values use each.
`

// keysCmd: connectd keys generate|add|promote|rotate|status|remove.
func keysCmd(ctx context.Context, args []string, env Env) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: keys: missing subcommand (run connectd keys --help)", errUsage)
	}
	sub, rest := args[0], args[1:]
	if isHelp(sub) {
		fmt.Fprint(env.Stdout, keysHelp)
		return flag.ErrHelp
	}
	fs := flag.NewFlagSet("keys "+sub, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), keysHelp) }
	ring := fs.String("ring", keys.EncryptionRing, "key ring: encryption or session")
	batch := fs.Int("batch", 500, "values re-sealed per transaction (rotate)")
	force := fs.Bool("force", false, "remove a session key although live sessions may hold tokens it signed")
	var pos []string
	switch sub {
	case "generate", "add", "rotate", "status":
	case "promote", "remove":
		pos = []string{"ID"}
	default:
		return fmt.Errorf("%w: keys: unknown subcommand %q (run connectd keys --help)", errUsage, sub)
	}
	vals, err := parsePositional(fs, rest, pos, env)
	if err != nil {
		return err
	}
	if *ring != keys.EncryptionRing && *ring != keys.SessionRing {
		return fmt.Errorf("%w: keys %s: --ring must be %s or %s", errUsage, sub, keys.EncryptionRing, keys.SessionRing)
	}
	var id uint32
	if len(vals) == 1 {
		n, err := strconv.ParseUint(vals[0], 10, 32)
		if err != nil {
			return fmt.Errorf("%w: keys %s: key id %q is not a decimal uint32", errUsage, sub, vals[0])
		}
		id = uint32(n)
	}
	switch sub {
	case "generate":
		lines, err := keys.GenerateLines(nil)
		if err != nil {
			return err
		}
		fmt.Fprint(env.Stdout, lines)
		return nil
	case "add":
		return keysAdd(env, *ring)
	case "promote":
		return keysPromote(env, *ring, id)
	case "rotate":
		if *ring == keys.SessionRing {
			fmt.Fprintln(env.Stdout, "session keys: nothing to re-seal (tokens are not stored); an old session key verifies until its tokens expire, at most CONNECTD_SESSION_TTL after every replica promoted the new key")
			return nil
		}
		if *batch <= 0 || *batch > 10000 {
			return fmt.Errorf("%w: keys rotate: --batch must be 1..10000", errUsage)
		}
		return keysRotate(ctx, env, *batch)
	case "status":
		return keysStatus(ctx, env)
	default:
		return keysRemove(ctx, env, *ring, id, *force)
	}
}

// parsePositional parses flags placed before or after the positional
// arguments named by want (all required).
func parsePositional(fs *flag.FlagSet, args, want []string, env Env) ([]string, error) {
	fs.SetOutput(io.Discard)
	var got []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(env.Stdout)
			fs.Usage()
			return nil, flag.ErrHelp
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v (run connectd %s --help)", errUsage, fs.Name(), err, fs.Name())
		}
		if fs.NArg() == 0 {
			break
		}
		got = append(got, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(got) < len(want) {
		return nil, fmt.Errorf("%w: %s: missing %s (run connectd %s --help)", errUsage, fs.Name(), want[len(got)], fs.Name())
	}
	if len(got) > len(want) {
		return nil, fmt.Errorf("%w: %s: unexpected argument %q (run connectd %s --help)", errUsage, fs.Name(), got[len(want)], fs.Name())
	}
	return got, nil
}

// loadKeySet reads the key rings as serve would, without generating any.
func loadKeySet(env Env) (*keys.Set, error) {
	cfg, err := loadConfig("connectd", "", nil, env)
	if err != nil {
		return nil, err
	}
	return keys.Load(keys.LoadOptions{
		DataDir:        cfg.DataDir,
		EncryptionKeys: cfg.EncryptionKeys,
		SessionKeys:    cfg.SessionKeys,
		SessionCheck:   session.CheckValue,
	})
}

// deploy writes the changed ring and tells the operator what to do next.
func deploy(env Env, s *keys.Set, r *keys.Ring, kr *encryption.KeyRing, what, next string) error {
	written, line, err := s.Replace(r, kr)
	if err != nil {
		return err
	}
	if written {
		fmt.Fprintf(env.Stdout, "%s; %s rewritten (%s keys: %s)\n", what, s.Path(), r.Name, idList(kr))
	} else {
		fmt.Fprintf(env.Stderr, "%s. %s comes from the environment: deploy this value to every replica (it is secret):\n", what, r.Env)
		fmt.Fprintln(env.Stdout, line)
	}
	if next != "" {
		fmt.Fprintf(env.Stderr, "next: %s\n", next)
	}
	return nil
}

func idList(kr *encryption.KeyRing) string {
	var parts []string
	for i, id := range kr.IDs() {
		p := fmt.Sprint(id)
		if i == 0 {
			p += " (primary)"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}

func keysAdd(env Env, ringName string) error {
	s, err := loadKeySet(env)
	if err != nil {
		return err
	}
	r, err := s.Ring(ringName)
	if err != nil {
		return err
	}
	id := slices.Max(r.Keys.IDs()) + 1
	key, err := encryption.GenerateKey(nil)
	if err != nil {
		return err
	}
	kr, err := r.Keys.Add(id, key)
	if err != nil {
		return err
	}
	return deploy(env, s, r, kr, fmt.Sprintf("added %s key %d (not primary)", r.Name, id),
		fmt.Sprintf("restart every replica with it, then run connectd keys promote %d%s", id, ringFlag(r.Name)))
}

func ringFlag(name string) string {
	if name == keys.SessionRing {
		return " --ring session"
	}
	return ""
}

func keysPromote(env Env, ringName string, id uint32) error {
	s, err := loadKeySet(env)
	if err != nil {
		return err
	}
	r, err := s.Ring(ringName)
	if err != nil {
		return err
	}
	if r.Keys.PrimaryID() == id {
		fmt.Fprintf(env.Stdout, "%s key %d is already the primary\n", r.Name, id)
		return nil
	}
	old := r.Keys.PrimaryID()
	kr, err := r.Keys.Promote(id)
	if err != nil {
		return fmt.Errorf("%s key %d is not in %s (keys: %s): add it first", r.Name, id, r.Env, idList(r.Keys))
	}
	next := fmt.Sprintf("restart every replica, then run connectd keys rotate, then connectd keys remove %d", old)
	if r.Name == keys.SessionRing {
		next = fmt.Sprintf("restart every replica; after CONNECTD_SESSION_TTL run connectd keys remove %d --ring session", old)
	}
	return deploy(env, s, r, kr, fmt.Sprintf("%s key %d is now the primary (key %d still opens/verifies)", r.Name, id, old), next)
}

// openOps opens the store as serve does (migrations, key checks).
func openOps(ctx context.Context, env Env, fn func(s *keys.Set, st *gormstore.Store) error) error {
	cfg, err := loadConfig("connectd", "", nil, env)
	if err != nil {
		return err
	}
	logger := logging.New(env.Stderr, cfg.LogLevel, cfg.LogFormat)
	ks, _, st, err := OpenStore(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(ks, st)
}

func keysRotate(ctx context.Context, env Env, batch int) error {
	return openOps(ctx, env, func(ks *keys.Set, st *gormstore.Store) error {
		bar := newProgressBar(env.Stderr, time.Now)
		res, err := st.RotateSealed(ctx, batch, bar.update)
		bar.finish()
		if err != nil {
			return fmt.Errorf("rotate: %w (run connectd keys rotate again to resume)", err)
		}
		fmt.Fprintf(env.Stdout, "re-sealed %d value(s) under encryption key %d; %d changed concurrently (left as written); %d could not be opened\n",
			res.Resealed, res.PrimaryKeyID, res.Conflicts, res.Failed)
		for _, ref := range res.FailedRefs {
			fmt.Fprintf(env.Stdout, "  cannot open: %s\n", ref)
		}
		if res.Conflicts > 0 {
			fmt.Fprintln(env.Stderr, "note: values written concurrently by a replica still on an older primary stay under that key; run connectd keys rotate again once every replica uses the new primary")
		}
		if res.Failed > 0 {
			return errors.New("some values could not be re-sealed (see above)")
		}
		return nil
	})
}

func keysStatus(ctx context.Context, env Env) error {
	return openOps(ctx, env, func(ks *keys.Set, st *gormstore.Store) error {
		usage, err := st.KeyUsage(ctx)
		if err != nil {
			return err
		}
		liveN, lastMS, err := st.LiveSessions(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "RING\tKEY\tROLE\tCHECK VALUE\tVALUES")
		for _, r := range ks.Rings() {
			checks, err := st.ListKeyChecks(ctx, r.Name)
			if err != nil {
				return err
			}
			checked := map[uint32]bool{}
			for _, c := range checks {
				checked[c.KeyID] = true
			}
			ids := r.Keys.IDs()
			counts := usage[r.Name]
			all := slices.Clone(ids)
			for id := range counts {
				if !slices.Contains(all, id) {
					all = append(all, id)
				}
			}
			for _, id := range all {
				role := "old"
				switch {
				case id == r.Keys.PrimaryID():
					role = "primary"
				case !slices.Contains(ids, id):
					role = "NOT CONFIGURED"
				}
				chk := "stored"
				if !checked[id] {
					chk = "-"
				}
				vals := "-"
				if r.Name == keys.EncryptionRing {
					vals = fmt.Sprint(counts[id])
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", r.Name, id, role, chk, vals)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		var total, old int64
		for id, n := range usage[keys.EncryptionRing] {
			total += n
			if id != ks.Encryption.Keys.PrimaryID() {
				old += n
			}
		}
		if old > 0 {
			fmt.Fprintf(env.Stdout, "encryption: %d of %d value(s) are under an older key: run connectd keys rotate\n", old, total)
		} else {
			fmt.Fprintf(env.Stdout, "encryption: %d value(s), all under the primary key\n", total)
		}
		if liveN > 0 {
			fmt.Fprintf(env.Stdout, "session: %d live session(s), the last expires %s; tokens signed by an old key verify until they expire\n",
				liveN, time.UnixMilli(lastMS).UTC().Format(time.RFC3339))
		} else {
			fmt.Fprintln(env.Stdout, "session: no live sessions")
		}
		fmt.Fprintf(env.Stdout, "sources: encryption keys from %s, session keys from %s\n", ks.Encryption.Source, ks.Session.Source)
		return nil
	})
}

func keysRemove(ctx context.Context, env Env, ringName string, id uint32, force bool) error {
	return openOps(ctx, env, func(ks *keys.Set, st *gormstore.Store) error {
		r, err := ks.Ring(ringName)
		if err != nil {
			return err
		}
		if !slices.Contains(r.Keys.IDs(), id) {
			return fmt.Errorf("%s key %d is not configured (keys: %s)", r.Name, id, idList(r.Keys))
		}
		if r.Keys.PrimaryID() == id {
			return fmt.Errorf("%s key %d is the primary: promote another key first (connectd keys promote ID%s)", r.Name, id, ringFlag(r.Name))
		}
		switch r.Name {
		case keys.EncryptionRing:
			usage, err := st.KeyUsage(ctx)
			if err != nil {
				return err
			}
			if n := usage[keys.EncryptionRing][id]; n > 0 {
				return fmt.Errorf("refused: %d stored value(s) still use encryption key %d: run connectd keys rotate first (connectd keys status shows the counts)", n, id)
			}
		case keys.SessionRing:
			n, last, err := st.LiveSessions(ctx)
			if err != nil {
				return err
			}
			if n > 0 && !force {
				return fmt.Errorf("refused: %d live session(s) (the last expires %s) may hold tokens signed by session key %d, which stop verifying once it is gone: wait CONNECTD_SESSION_TTL after promoting the new key everywhere, then run this with --force",
					n, time.UnixMilli(last).UTC().Format(time.RFC3339), id)
			}
		}
		kr, err := r.Keys.Remove(id)
		if err != nil {
			return err
		}
		if err := deploy(env, ks, r, kr, fmt.Sprintf("removed %s key %d", r.Name, id), ""); err != nil {
			return err
		}
		if err := st.DeleteKeyCheck(ctx, r.Name, id); err != nil {
			return err
		}
		fmt.Fprintf(env.Stderr, "deleted the stored check value of %s key %d: replicas without it may start\n", r.Name, id)
		return nil
	})
}

var _ store.Rotation = (*gormstore.Store)(nil)

// progressBar draws "[=====>    ]  45.2%  45200/100000  12345/s  ETA 4s"
// on one line of w, at most every 200ms.
type progressBar struct {
	w          io.Writer
	now        func() time.Time
	start      time.Time
	last       time.Time
	drawn      bool
	lastReport store.RotateProgress
}

func newProgressBar(w io.Writer, now func() time.Time) *progressBar {
	t := now()
	return &progressBar{w: w, now: now, start: t}
}

func (b *progressBar) update(p store.RotateProgress) {
	b.lastReport = p
	t := b.now()
	if b.drawn && t.Sub(b.last) < 200*time.Millisecond && p.Done < p.Total {
		return
	}
	b.last, b.drawn = t, true
	fmt.Fprint(b.w, "\r"+renderProgress(p, t.Sub(b.start)))
}

func (b *progressBar) finish() {
	if b.drawn {
		fmt.Fprint(b.w, "\r"+renderProgress(b.lastReport, b.now().Sub(b.start))+"\n")
	}
}

// renderProgress formats one progress line.
func renderProgress(p store.RotateProgress, elapsed time.Duration) string {
	const width = 30
	frac := 1.0
	if p.Total > 0 {
		frac = min(float64(p.Done)/float64(p.Total), 1)
	}
	n := int(frac * width)
	bar := strings.Repeat("=", n)
	if n < width {
		bar += ">" + strings.Repeat(" ", width-n-1)
	}
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(p.Done) / s
	}
	eta := "?"
	switch {
	case p.Done >= p.Total:
		eta = "0s"
	case rate > 0:
		eta = (time.Duration(float64(p.Total-p.Done)/rate) * time.Second).Round(time.Second).String()
	}
	return fmt.Sprintf("[%s] %5.1f%%  %d/%d  %.0f values/s  ETA %s  %-28s", bar, frac*100, p.Done, p.Total, rate, eta, p.Column)
}
