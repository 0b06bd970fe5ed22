/* SPDX-License-Identifier: Apache-2.0 */
/* bench_broker.c - zkw-broker under load: read throughput, update storm, cost.
 *
 * Against a real zkw-broker process:
 *
 *  1. Reads per second with 0, 1 and 2 reader processes reading a 4 KiB
 *     config in a tight loop while ZooKeeper receives 1,000 updates/s
 *     (paced async zoo_aset) and the broker publishes them. Counted per
 *     reader: reads, -EAGAIN results, and reads that overlapped a publish
 *     (the generation moved between the poll before and the snapshot read:
 *     an upper bound on seqlock retries, which the latch makes rare).
 *     The 0-reader phase gives the broker's CPU per 1,000 updates.
 *  2. Update storm: a writer sets the node as fast as it can (async
 *     zoo_aset, bounded in flight) for 10 s (--quick: 2 s), then a few
 *     short storms. Readers blocked in zkw_reader_wait check that the
 *     generation and the content's sequence number never go backwards; the
 *     bench measures the broker's publish rate and the time from the last
 *     write's completion until every reader holds it (fails if > 5 s).
 *  3. Broker cost: RSS/PSS and CPU (utime+stime) idle for 10 s.
 *
 *     bench_broker -z 127.0.0.1:2181 --broker build/zkw-broker [--quick]
 */
#include <pthread.h>

#include "bench.h"

#define MAX_READERS         64
#define READ_SIZE           4096
#define CONVERGE_TIMEOUT_NS 5000000000ull

struct reader_stats {
	uint64_t reads, eagain, overlapped, backwards_gen, backwards_seq, errors;
	uint64_t last_gen, last_seq, last_ns;
	double cpu_s;
	uint8_t pad_[8];
};

struct shared {
	uint32_t phase; /* readers spin while phase == 1, stop at 2 */
	uint32_t quit;
	struct reader_stats r[MAX_READERS];
};

static struct shared *sh;
static const char *opt_hosts, *opt_broker;
static bool opt_quick;
static char node_path[256], shm_name[128], log_path[256];

/* ---- readers ------------------------------------------------------------ */

/* Throughput reader: read in a loop while phase == 1. */
static void spin_reader_main(int idx)
{
	static char buf[READ_SIZE + 64];
	struct reader_stats *st = &sh->r[idx];
	zkw_reader r;
	zkw_snapshot meta;
	uint64_t reads = 0, eagain = 0, overlapped = 0, back = 0, last_gen = 0;

	bench_reader_open(&r, shm_name);
	while (__atomic_load_n(&sh->phase, __ATOMIC_ACQUIRE) == 0) {
		if (proc_parent_gone())
			_exit(0);
		zkw_clock_sleep_ns(100000);
	}
	while (__atomic_load_n(&sh->phase, __ATOMIC_RELAXED) == 1) {
		uint64_t g0 = zkw_reader_generation(&r);
		ssize_t n = zkw_reader_read(&r, &meta, buf, sizeof(buf));

		reads++;
		if (n < 0) {
			if (n == -EAGAIN)
				eagain++;
			else
				st->errors++;
			continue;
		}
		overlapped += meta.generation != g0;
		back += meta.generation < last_gen;
		last_gen = meta.generation;
	}
	st->reads = reads;
	st->eagain = eagain;
	st->overlapped = overlapped;
	st->backwards_gen = back;
	st->last_gen = last_gen;
	st->cpu_s = bench_cpu_s(getpid());
	__atomic_store_n(&st->last_ns, 1, __ATOMIC_RELEASE); /* done */
	while (!proc_parent_gone())
		zkw_clock_sleep_ns(50000000);
	_exit(0);
}

/* Storm reader: wait, read, check monotonic generation and sequence. */
static void storm_reader_main(int idx)
{
	static char buf[READ_SIZE + 64];
	struct reader_stats *st = &sh->r[idx];
	zkw_reader r;
	zkw_snapshot meta;
	uint64_t seen;

	bench_reader_open(&r, shm_name);
	seen = zkw_reader_generation(&r);
	for (;;) {
		ssize_t n = bench_reader_next(&r, &seen, 200, &meta, buf, sizeof(buf));
		uint64_t seq;

		if (n < 0) {
			__atomic_add_fetch(n == -EAGAIN ? &st->eagain : &st->errors, 1, __ATOMIC_RELAXED);
			continue;
		}
		__atomic_add_fetch(&st->reads, 1, __ATOMIC_RELAXED);
		if (meta.generation <= st->last_gen)
			__atomic_add_fetch(&st->backwards_gen, 1, __ATOMIC_RELAXED);
		seq = bench_config_seq(buf, n);
		if (seq < st->last_seq)
			__atomic_add_fetch(&st->backwards_seq, 1, __ATOMIC_RELAXED);
		__atomic_store_n(&st->last_gen, meta.generation, __ATOMIC_RELAXED);
		if (seq != st->last_seq) {
			st->last_ns = zkw_clock_mono_ns();
			__atomic_store_n(&st->last_seq, seq, __ATOMIC_RELEASE);
		}
	}
}

/* ---- the writer ------------------------------------------------------------ */

static void issue_set(zhandle_t *zh, uint64_t seq, size_t len)
{
	static char buf[READ_SIZE + 64];
	int n = bench_config(buf, sizeof(buf), seq, len);

	bench_set_issue(zh, node_path, buf, n, seq);
}

static uint64_t seq_counter = 1;

/* ---- 1. reads/s while updates arrive at 1,000/s ------------------------------ */

struct tp_result {
	int readers;
	double secs, updates, generations, reads_per_s[2], broker_cpu_s;
	uint64_t reads[2], eagain[2], overlapped[2], backwards[2];
	double reader_cpu_s[2];
};

static uint64_t segment_generation(void)
{
	zkw_reader r;
	uint64_t g;

	if (zkw_reader_open(&r, shm_name) != 0)
		bench_die("cannot open segment %s: %s", shm_name, r.why);
	g = zkw_reader_generation(&r);
	zkw_reader_close(&r);
	return g;
}

static void throughput_phase(zhandle_t *zh, pid_t broker, int nreaders, double secs, struct tp_result *res)
{
	pid_t pids[2];
	uint64_t t0, end, next, g0, g1, n0;
	double cpu0;
	int i;

	memset(sh->r, 0, sizeof(sh->r));
	__atomic_store_n(&sh->phase, 0, __ATOMIC_RELEASE);
	for (i = 0; i < nreaders; i++) {
		pids[i] = bench_fork();
		if (pids[i] == 0)
			spin_reader_main(i);
	}
	zkw_clock_sleep_ns(100000000); /* readers mapped the segment */
	res->readers = nreaders;
	g0 = segment_generation();
	cpu0 = bench_cpu_s(broker);
	n0 = bench_wr.completed;
	__atomic_store_n(&sh->phase, 1, __ATOMIC_RELEASE);
	t0 = zkw_clock_mono_ns();
	end = t0 + (uint64_t)(secs * 1e9);
	/* 1,000 updates/s, paced on absolute deadlines; at most 100 in flight. */
	for (next = t0; next < end; next += 1000000) {
		zkw_clock_sleep_until_ns(next);
		bench_set_wait_below(100, 5000);
		issue_set(zh, ++seq_counter, READ_SIZE);
	}
	bench_set_wait_below(1, 5000);
	__atomic_store_n(&sh->phase, 2, __ATOMIC_RELEASE);
	res->secs = (double)(zkw_clock_mono_ns() - t0) / 1e9;
	zkw_clock_sleep_ns(20000000); /* the last publications */
	g1 = segment_generation();
	res->broker_cpu_s = bench_cpu_s(broker) - cpu0;
	res->updates = (double)(bench_wr.completed - n0);
	res->generations = (double)(g1 - g0);
	for (i = 0; i < nreaders; i++) {
		uint64_t stop_by = zkw_clock_mono_ns() + 5000000000ull;

		while (!__atomic_load_n(&sh->r[i].last_ns, __ATOMIC_ACQUIRE))
			if (zkw_clock_mono_ns() > stop_by)
				bench_die("reader %d did not report", i);
			else
				zkw_clock_sleep_ns(1000000);
		res->reads[i] = sh->r[i].reads;
		res->eagain[i] = sh->r[i].eagain;
		res->overlapped[i] = sh->r[i].overlapped;
		res->backwards[i] = sh->r[i].backwards_gen;
		res->reads_per_s[i] = (double)sh->r[i].reads / res->secs;
		res->reader_cpu_s[i] = sh->r[i].cpu_s;
		if (sh->r[i].errors)
			bench_die("reader %d: %" PRIu64 " read errors", i, sh->r[i].errors);
	}
	proc_kill_pids(pids, nreaders);
}

/* ---- 2. the update storm --------------------------------------------------- */

struct storm_result {
	double secs, sets_per_s, gens_per_s, converge_ms, broker_cpu_s;
	uint64_t sets, gens, final_seq, reads, eagain, back_gen, back_seq;
	int readers;
};

static void storm(zhandle_t *zh, pid_t broker, int nreaders, double secs, unsigned inflight,
                  struct storm_result *res)
{
	pid_t pids[MAX_READERS];
	uint64_t t0, end, g0, g1, final, t_last, deadline, mx = 0;
	double cpu0;
	char got[256];
	int i, glen, rc;

	memset(res, 0, sizeof(*res));
	memset(sh->r, 0, sizeof(sh->r));
	for (i = 0; i < nreaders; i++) {
		pids[i] = bench_fork();
		if (pids[i] == 0)
			storm_reader_main(i);
	}
	zkw_clock_sleep_ns(100000000);
	res->readers = nreaders;
	g0 = segment_generation();
	cpu0 = bench_cpu_s(broker);
	pthread_mutex_lock(&bench_wr.lock);
	bench_wr.completed = bench_wr.failed = 0;
	pthread_mutex_unlock(&bench_wr.lock);
	t0 = zkw_clock_mono_ns();
	end = t0 + (uint64_t)(secs * 1e9);
	while (zkw_clock_mono_ns() < end) {
		bench_set_wait_below(inflight, 10000);
		issue_set(zh, ++seq_counter, BENCH_CONFIG_LEN);
	}
	final = seq_counter;
	bench_set_wait_below(1, 10000);
	res->secs = (double)(zkw_clock_mono_ns() - t0) / 1e9;
	pthread_mutex_lock(&bench_wr.lock);
	t_last = bench_wr.last_done_ns;
	res->sets = bench_wr.completed;
	if (bench_wr.failed)
		bench_die("storm: %" PRIu64 " writes failed", bench_wr.failed);
	if (bench_wr.last_done_seq != final)
		bench_die("storm: last completed write is seq %" PRIu64 ", not %" PRIu64, bench_wr.last_done_seq,
		          final);
	pthread_mutex_unlock(&bench_wr.lock);

	/* Every reader must come to hold the last write. */
	deadline = t_last + CONVERGE_TIMEOUT_NS;
	for (i = 0; i < nreaders; i++) {
		while (__atomic_load_n(&sh->r[i].last_seq, __ATOMIC_ACQUIRE) != final) {
			if (zkw_clock_mono_ns() > deadline)
				bench_die("storm: reader %d holds seq %" PRIu64
				          ", not the last write %" PRIu64
				          ", %.1f s after it completed: NOT CONVERGED",
				          i, sh->r[i].last_seq, final,
				          (double)(zkw_clock_mono_ns() - t_last) / 1e9);
			zkw_clock_sleep_ns(50000);
		}
		if (sh->r[i].last_ns > mx)
			mx = sh->r[i].last_ns;
	}
	res->converge_ms = ((double)mx - (double)t_last) / 1e6;
	g1 = segment_generation();
	res->broker_cpu_s = bench_cpu_s(broker) - cpu0;
	res->gens = g1 - g0;
	res->sets_per_s = (double)res->sets / res->secs;
	res->gens_per_s = (double)res->gens / res->secs;
	res->final_seq = final;
	glen = sizeof(got);
	rc = zoo_get(zh, node_path, 0, got, &glen, NULL);
	if (rc != ZOK || bench_config_seq(got, glen) != final)
		bench_die("storm: ZooKeeper holds seq %" PRIu64 ", expected %" PRIu64,
		          bench_config_seq(got, glen), final);
	zkw_clock_sleep_ns(20000000);
	for (i = 0; i < nreaders; i++) {
		res->reads += sh->r[i].reads;
		res->eagain += sh->r[i].eagain;
		res->back_gen += sh->r[i].backwards_gen;
		res->back_seq += sh->r[i].backwards_seq;
		if (sh->r[i].errors)
			bench_die("storm: reader %d: %" PRIu64 " read errors", i, sh->r[i].errors);
	}
	proc_kill_pids(pids, nreaders);
	if (res->back_gen || res->back_seq)
		bench_die("storm: readers went backwards (%" PRIu64 " generation, %" PRIu64
		          " content sequence)",
		          res->back_gen, res->back_seq);
}

/* ---- main -------------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_broker -z HOSTS --broker PATH [--quick] [--markdown|--plain]\n");
}

int main(int argc, char **argv)
{
	static struct tp_result tp[3];
	static struct storm_result st[8];
	char buf[READ_SIZE + 64];
	double idle_s, idle_cpu0, idle_cpu, phase_s, storm_s, short_s;
	long rss_idle, pss_idle, rss_after, pss_after;
	int c, i, nstorms, storm_readers;
	zhandle_t *zh;
	pid_t broker;
	uint64_t t_start = zkw_clock_mono_ns();
	struct zkw_opt o;

	bench_init("bench_broker");
	zkw_opt_init(&o, argc, argv, "bench_broker",
	             "z|zookeeper: b|broker: q|quick m=markdown p=plain h|help", usage);
	while ((c = zkw_opt_next(&o)) != -1) {
		switch (c) {
		case 'z': opt_hosts = o.arg; break;
		case 'b': opt_broker = o.arg; break;
		case 'q': opt_quick = true; break;
		case 'm':
		case 'p': break; /* the report is markdown either way */
		default: return 2;
		}
	}
	if (!opt_hosts || !opt_broker) {
		usage(stderr);
		return 2;
	}
	idle_s = opt_quick ? 2 : 10;
	phase_s = opt_quick ? 1 : 3;
	storm_s = opt_quick ? 2 : 10;
	short_s = opt_quick ? 0.5 : 1;
	nstorms = opt_quick ? 3 : 6;
	storm_readers = opt_quick ? 4 : 16;

	sh = bench_shared_alloc(sizeof(*sh));
	snprintf(node_path, sizeof(node_path), "/zkwbench/brk%d/config", (int)getpid());
	snprintf(shm_name, sizeof(shm_name), "zkwbench.brk.%d", (int)getpid());
	snprintf(log_path, sizeof(log_path), "/tmp/zkwbench-broker-%d.log", (int)getpid());

	zh = bench_zk_connect(opt_hosts);
	bench_config(buf, sizeof(buf), ++seq_counter, READ_SIZE);
	bench_zk_put(zh, node_path, buf, READ_SIZE);
	broker = bench_broker_start(opt_broker, opt_hosts, node_path, shm_name, NULL, log_path);

	/* 3. idle cost first, on a fresh broker. */
	bench_note("broker idle for %.0f s", idle_s);
	zkw_clock_sleep_ns(500000000);
	idle_cpu0 = bench_cpu_s(broker);
	zkw_clock_sleep_ns((uint64_t)(idle_s * 1e9));
	idle_cpu = bench_cpu_s(broker) - idle_cpu0;
	rss_idle = bench_rss_kb(broker);
	pss_idle = bench_pss_kb(broker);

	/* 1. reads/s under 1,000 updates/s (0 readers: the broker's cost). */
	for (i = 0; i < 3; i++) {
		bench_note("1,000 updates/s for %.0f s with %d spinning reader%s", phase_s, i,
		           i == 1 ? "" : "s");
		throughput_phase(zh, broker, i, phase_s, &tp[i]);
	}

	/* 2. storms: one long, then short ones (each must converge). */
	for (i = 0; i < nstorms; i++) {
		double secs = i == 0 ? storm_s : short_s;

		bench_note("update storm %d: %.1f s, %d readers", i + 1, secs, storm_readers);
		storm(zh, broker, storm_readers, secs, 64, &st[i]);
	}
	rss_after = bench_rss_kb(broker);
	pss_after = bench_pss_kb(broker);

	proc_stop_pid(broker, SIGTERM, 5000);
	unlink(log_path); /* kept only when the bench fails */
	{
		char parent[256];

		snprintf(parent, sizeof(parent), "/zkwbench/brk%d", (int)getpid());
		zkw_zk_delete_tree(zh, parent, NULL, 0);
	}
	zkw_zk_close(zh);

	/* ---- report ---- */
	printf("## Read path under updates: reads per second while the broker publishes\n\n");
	printf("Reader processes call zkw_reader_read (a %d-byte config, full snapshot with metadata) in a "
	       "tight loop while ZooKeeper receives 1,000 updates/s (paced async zoo_aset) and the broker "
	       "publishes them. \"overlapped\" = reads during which the generation moved (upper bound on "
	       "seqlock retries); -EAGAIN = reads that gave up after %d retries.\n\n",
	       READ_SIZE, ZKW_READ_RETRIES);
	printf("| reader processes | seconds | updates/s (ZooKeeper) | publishes/s (broker) | reads/s total "
	       "| "
	       "reads/s per reader | reads per reader CPU-s | overlapped | -EAGAIN | went backwards |\n"
	       "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (i = 0; i < 3; i++) {
		struct tp_result *t = &tp[i];
		double total = 0, cpu = 0;
		uint64_t reads = 0, ov = 0, ea = 0, back = 0;
		int j;

		for (j = 0; j < t->readers; j++) {
			total += t->reads_per_s[j];
			reads += t->reads[j];
			cpu += t->reader_cpu_s[j];
			ov += t->overlapped[j];
			ea += t->eagain[j];
			back += t->backwards[j];
		}
		if (t->readers)
			printf("| %d | %.1f | %.0f | %.0f | %.3g | %.3g | %.3g | %" PRIu64 " | %" PRIu64
			       " | %" PRIu64 " |\n",
			       t->readers, t->secs, t->updates / t->secs, t->generations / t->secs, total,
			       total / t->readers, cpu > 0 ? (double)reads / cpu : 0, ov, ea, back);
		else
			printf("| 0 | %.1f | %.0f | %.0f | - | - | - | - | - | - |\n", t->secs,
			       t->updates / t->secs, t->generations / t->secs);
	}

	printf("\n## Update storm\n\n");
	printf("A writer sets the node as fast as it can (async zoo_aset, <= 64 in flight, %d-byte "
	       "config carrying a sequence number); %d reader processes blocked in zkw_reader_wait read "
	       "every generation they are woken for and check that neither the generation nor the "
	       "content's sequence number ever goes backwards. Convergence = the last write's completion "
	       "(at the writer) -> the last reader holding it (negative: readers had it before the writer "
	       "saw its reply); must be < 5 s.\n\n",
	       BENCH_CONFIG_LEN, storm_readers);
	printf("| storm | seconds | writes/s (ZooKeeper) | publishes/s (broker) | reader reads | "
	       "backwards (gen/seq) | -EAGAIN | converged in ms | broker CPU us per write |\n"
	       "|---:|---:|---:|---:|---:|---|---:|---:|---:|\n");
	{
		double conv[8];

		for (i = 0; i < nstorms; i++) {
			printf("| %d | %.1f | %.0f | %.0f | %" PRIu64 " | %" PRIu64 "/%" PRIu64 " | %" PRIu64
			       " | %.2f | %.1f |\n",
			       i + 1, st[i].secs, st[i].sets_per_s, st[i].gens_per_s, st[i].reads,
			       st[i].back_gen, st[i].back_seq, st[i].eagain, st[i].converge_ms,
			       st[i].sets ? st[i].broker_cpu_s * 1e6 / (double)st[i].sets : 0);
			conv[i] = st[i].converge_ms;
		}
		{
			bench_stats cs;

			bench_stats_of(conv, (size_t)nstorms, &cs);
			printf("\nEvery storm converged to ZooKeeper's last value (%d of %d; convergence min "
			       "%.2f / "
			       "median %.2f / max %.2f ms); no reader ever went backwards: target **met**.\n",
			       nstorms, nstorms, cs.min, cs.median, cs.max);
		}
	}

	printf("\n## Broker cost\n\n");
	printf("| measure | value | target | verdict |\n|---|---:|---|---|\n");
	printf("| CPU idle (utime+stime over %.0f s) | %.1f ms (%.3f%% of a core) | ~0 | %s |\n", idle_s,
	       idle_cpu * 1e3, idle_cpu / idle_s * 100, bench_verdict(idle_cpu / idle_s < 0.001));
	printf("| RSS idle (VmRSS) | %.2f MiB | < 8 MiB | %s |\n", rss_idle / 1024.0,
	       bench_verdict(rss_idle < 8 * 1024));
	printf("| PSS idle (smaps_rollup) | %.2f MiB | - | - |\n", pss_idle / 1024.0);
	printf("| RSS / PSS after the storms | %.2f / %.2f MiB | < 8 MiB | %s |\n", rss_after / 1024.0,
	       pss_after / 1024.0, bench_verdict(rss_after < 8 * 1024));
	printf("| CPU per 1,000 updates (1,000/s, %d-byte config, no readers) | %.1f ms | - | - |\n",
	       READ_SIZE, tp[0].updates ? tp[0].broker_cpu_s * 1e3 / tp[0].updates * 1000 : 0);
	printf("| CPU per 1,000 writes in the storm (%d-byte config, coalesced) | %.1f ms | - | - |\n",
	       BENCH_CONFIG_LEN, st[0].sets ? st[0].broker_cpu_s * 1e3 / (double)st[0].sets * 1000 : 0);
	printf("\nNote: RSS counts the segment pages the broker touched (/dev/shm, shared with the readers): "
	       "two slots of the %u-byte default capacity are mapped, only the written part is resident.\n",
	       ZKW_DEFAULT_CAPACITY);
	printf("\n_bench_broker finished in %.1f s._\n\n", (double)(zkw_clock_mono_ns() - t_start) / 1e9);
	return 0;
}
