/* SPDX-License-Identifier: Apache-2.0 */
/* bench_fleet.c - many brokers against one 3-node ensemble: the load a
 * fleet puts on ZooKeeper, at steady state and when the ensemble comes back.
 *
 *     bench_fleet --zk-dir DIR --zk-sh tools/zk.sh --broker build/zkw-broker
 *                 [--brokers 50] [--watches 200] [--reconcile 20] [--quick]
 *
 * DIR holds a running 3-member ensemble laid out by tools/zk.sh (run.sh
 * starts it and stops it, whatever happens to this program). B brokers
 * (one per simulated host) each watch the same W nodes with -f (a fleet
 * watches the same configs), every segment opened here to see its state.
 * ZooKeeper's load is the sum over the members of mntr zk_packets_received
 * (client requests, pings included), sampled every 100 ms.
 *
 *  1. Steady state: the request rate before the first reconcile round
 *     (pings only) and over one round (--reconcile R, a shorter period than
 *     the default 60 s so that a round fits the run; the rate scales as
 *     1/R).
 *  2. Recovery: every member stopped (zk.sh stop) and started again (zk.sh
 *     member-start, the three at once); the time until every segment is
 *     valid and connected again, the requests the fleet sends until then,
 *     its busiest second, and the rate in the seconds after.
 *
 * The report extrapolates both to 10,000 hosts on paper.
 */
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "bench.h"

#define MAX_MEMBERS 3
#define MAX_BROKERS 200
#define SAMPLE_NS   100000000ull /* mntr every 100 ms */
#define MAX_SAMPLES 6000

static const char *opt_zk_dir, *opt_zk_sh, *opt_broker;
static int opt_brokers = 50, opt_watches = 200, opt_reconcile = 20;
static bool opt_quick;
static char hosts[512], member[MAX_MEMBERS][64], base_path[128], shm_prefix[64], log_path[256];
static int nmembers;

/* ---- ZooKeeper's load ---------------------------------------------------------------- */

static long long last_packets[MAX_MEMBERS];
static bool have_last[MAX_MEMBERS];

/* Packets received by the ensemble since the previous call (a member that
 * restarted counts from 0 again; one that does not answer, nothing). */
static long long packets_delta(int *serving)
{
	long long sum = 0;

	*serving = 0;
	for (int m = 0; m < nmembers; m++) {
		long long v = bench_zk_mntr(member[m], "zk_packets_received");

		if (v < 0)
			continue;
		(*serving)++;
		if (have_last[m])
			sum += v >= last_packets[m] ? v - last_packets[m] : v;
		last_packets[m] = v;
		have_last[m] = true;
	}
	return sum;
}

/* Requests a second over secs. */
static double packets_rate(double secs)
{
	int serving;
	uint64_t t0, t1;
	long long n;

	packets_delta(&serving);
	t0 = zkw_clock_mono_ns();
	zkw_clock_sleep_ns((uint64_t)(secs * 1e9));
	n = packets_delta(&serving);
	t1 = zkw_clock_mono_ns();
	return (double)n / ((double)(t1 - t0) / 1e9);
}

/* ---- segments ------------------------------------------------------------------------ */

static zkw_reader *readers;
static int nreaders;

static void segment_name(char *out, size_t cap, int b, int w)
{
	snprintf(out, cap, "%sb%d.w%d", shm_prefix, b, w);
}

/* How many segments are valid and connected (broker alive aside). */
static int segments_good(void)
{
	int good = 0;

	for (int i = 0; i < nreaders; i++) {
		uint32_t st = zkw_reader_state(&readers[i]);

		good += (st & (ZKW_STATE_VALID | ZKW_STATE_CONNECTED)) ==
		        (ZKW_STATE_VALID | ZKW_STATE_CONNECTED);
	}
	return good;
}

/* ---- zk.sh ---------------------------------------------------------------------------- */

static pid_t zk_sh(const char *cmd, const char *n)
{
	const char *argv[] = {"/bin/bash", opt_zk_sh, cmd, opt_zk_dir, n, NULL};
	pid_t pid = bench_fork();

	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);

		if (fd >= 0)
			dup2(fd, 1);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

static int zk_sh_status(pid_t pid)
{
	int st;

	if (!proc_pid_exited(pid, &st))
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* ---- main ------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_fleet --zk-dir DIR --zk-sh PATH --broker PATH [--brokers N] [--watches N]\n"
	           "                   [--reconcile S] [--quick] [--data FILE] [--markdown]\n");
}

static void read_hosts(void)
{
	char path[512], *tok, *save = NULL, copy[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/hosts", opt_zk_dir);
	f = fopen(path, "r");
	if (!f || !fgets(hosts, sizeof(hosts), f))
		bench_die("%s: no connect string (start the ensemble with tools/zk.sh start DIR --nodes 3)",
		          path);
	fclose(f);
	hosts[strcspn(hosts, "\n")] = '\0';
	snprintf(copy, sizeof(copy), "%s", hosts);
	for (tok = strtok_r(copy, ",", &save); tok && nmembers < MAX_MEMBERS;
	     tok = strtok_r(NULL, ",", &save))
		snprintf(member[nmembers++], sizeof(member[0]), "%s", tok);
	if (nmembers != 3)
		bench_die("%s: want a 3-member ensemble, found %d member(s): %s", opt_zk_dir, nmembers,
		          hosts);
}

int main(int argc, char **argv)
{
	static pid_t brokers[MAX_BROKERS];
	static double rate_t[MAX_SAMPLES];
	static long long rate_n[MAX_SAMPLES];
	char buf[BENCH_CONFIG_LEN + 32], path[256], name[128];
	double ping_rate, steady_rate, ping_window, steady_window, t_up, t_serving, t_recovered = -1,
	                                                                            t_all_down = -1;
	long long during = 0, after = 0, peak = 0;
	double after_s;
	uint64_t t_start = zkw_clock_mono_ns(), t0, t_restart;
	int c, nsamples = 0, min_good;
	pid_t stopper, starters[MAX_MEMBERS];
	struct zkw_opt o;
	zhandle_t *zh;

	bench_init("bench_fleet");
	zkw_opt_init(&o, argc, argv, "bench_fleet",
	             "d=zk-dir: s=zk-sh: b|broker: n=brokers: w=watches: r=reconcile: q|quick D=data: "
	             "m=markdown h|help",
	             usage);
	while ((c = zkw_opt_next(&o)) != -1) {
		switch (c) {
		case 'd': opt_zk_dir = o.arg; break;
		case 's': opt_zk_sh = o.arg; break;
		case 'b': opt_broker = o.arg; break;
		case 'n':
			if (zkw_opt_int(&o, "a number of brokers from 1 to 200", 1, MAX_BROKERS,
			                &opt_brokers))
				return 2;
			break;
		case 'w':
			if (zkw_opt_int(&o, "a number of watches from 1 to 1000", 1, 1000, &opt_watches))
				return 2;
			break;
		case 'r':
			if (zkw_opt_int(&o, "seconds from 1 to 600", 1, 600, &opt_reconcile))
				return 2;
			break;
		case 'q': opt_quick = true; break;
		case 'D': bench_data_open(o.arg); break;
		case 'm': break; /* the report is markdown either way */
		default: return 2;
		}
	}
	if (!opt_zk_dir || !opt_zk_sh || !opt_broker || zkw_opt_no_operands(&o)) {
		usage(stderr);
		return 2;
	}
	read_hosts();
	after_s = opt_quick ? 3.0 : 10.0;
	snprintf(base_path, sizeof(base_path), "/zkwbench/fleet%d", (int)getpid());
	snprintf(shm_prefix, sizeof(shm_prefix), "zkwbench.f%d.", (int)getpid());
	snprintf(log_path, sizeof(log_path), "/tmp/zkwbench-fleet-%d.log", (int)getpid());
	bench_sweep_on_exit(shm_prefix); /* segments of brokers that could not remove them */

	/* The nodes every host watches. An ensemble just started may stall a
	 * write for a while (followers still syncing): retry, bounded. */
	zh = bench_zk_connect(hosts);
	for (int w = 0; w < opt_watches; w++) {
		int len = bench_config(buf, sizeof(buf), (uint64_t)w + 1, BENCH_CONFIG_LEN);
		uint64_t end = zkw_clock_mono_ns() + 60000000000ull;
		char why[256];

		snprintf(path, sizeof(path), "%s/c%d", base_path, w);
		while (zkw_zk_put(zh, path, buf, len, NULL, why, sizeof(why)) != 0) {
			if (zkw_clock_mono_ns() > end)
				bench_die("set %s: %s (60 s of retries)", path, why);
			bench_note("set %s: %s; again", path, why);
			zkw_zk_close(zh);
			zkw_clock_sleep_ns(200000000);
			zh = bench_zk_connect(hosts);
		}
	}
	zkw_zk_close(zh);

	/* The fleet. */
	bench_note("%d brokers x %d watches against %s", opt_brokers, opt_watches, hosts);
	t0 = zkw_clock_mono_ns();
	for (int b = 0; b < opt_brokers; b++) {
		const char **args = calloc((size_t)opt_watches * 4 + 16, sizeof(*args));
		char reconcile[16], (*names)[128] = calloc((size_t)opt_watches, sizeof(*names)),
		                    (*paths)[256] = calloc((size_t)opt_watches, sizeof(*paths));
		int n = 0;

		if (!args || !names || !paths)
			bench_die("out of memory");
		snprintf(reconcile, sizeof(reconcile), "%d", opt_reconcile);
		args[n++] = opt_broker;
		args[n++] = "-z";
		args[n++] = hosts;
		args[n++] = "--socket";
		args[n++] = "none";
		args[n++] = "--reconcile";
		args[n++] = reconcile;
		args[n++] = "--unlink-on-exit";
		for (int w = 0; w < opt_watches; w++) {
			snprintf(paths[w], sizeof(paths[w]), "%s/c%d", base_path, w);
			segment_name(names[w], sizeof(names[w]), b, w);
			args[n++] = "-f";
			args[n++] = paths[w];
			args[n++] = "--shm";
			args[n++] = names[w];
		}
		args[n] = NULL;
		brokers[b] = bench_spawn(args, log_path);
		free(args);
		free(names);
		free(paths);
	}
	nreaders = opt_brokers * opt_watches;
	{
		/* A descriptor per segment watched here. */
		struct rlimit rl;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
		    rl.rlim_cur < (rlim_t)nreaders + 256) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
			if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)nreaders + 256)
				bench_die("%d segments to watch, open file limit %llu: raise ulimit -n",
				          nreaders, (unsigned long long)rl.rlim_cur);
		}
	}
	readers = calloc((size_t)nreaders, sizeof(*readers));
	if (!readers)
		bench_die("out of memory");
	for (int b = 0, i = 0; b < opt_brokers; b++)
		for (int w = 0; w < opt_watches; w++, i++) {
			uint64_t end = zkw_clock_mono_ns() + 60000000000ull;

			segment_name(name, sizeof(name), b, w);
			while (zkw_reader_open(&readers[i], name) != 0) {
				int st;

				if (proc_pid_exited(brokers[b], &st))
					bench_die("broker %d exited (status %d) during start-up; see %s", b,
					          st, log_path);
				if (zkw_clock_mono_ns() > end)
					bench_die("segment %s: %s, 60 s after start", name, readers[i].why);
				zkw_clock_sleep_ns(5000000);
			}
		}
	while (segments_good() < nreaders) {
		if (zkw_clock_mono_ns() - t0 > 120000000000ull)
			bench_die("only %d of %d segments valid 120 s after start; see %s", segments_good(),
			          nreaders, log_path);
		zkw_clock_sleep_ns(10000000);
	}
	t_up = (double)(zkw_clock_mono_ns() - t0) / 1e9;
	bench_note("fleet up: every segment valid after %.2f s", t_up);

	/* 1. Steady state. A broker's first round starts 0.8 R to 1.2 R after
	 * it connected: before, only pings; then a round of R +-20%. */
	ping_window = 0.8 * opt_reconcile - 0.5 - (double)(zkw_clock_mono_ns() - t0) / 1e9;
	if (ping_window < 0.5)
		ping_window = 0.5;
	ping_rate = packets_rate(ping_window);
	{
		double wait = 1.2 * opt_reconcile + 0.5 - (double)(zkw_clock_mono_ns() - t0) / 1e9;

		if (wait > 0)
			zkw_clock_sleep_ns((uint64_t)(wait * 1e9));
	}
	steady_window = opt_reconcile;
	bench_note("steady state: %.1f s of pings, then %.1f s (a round)", ping_window, steady_window);
	steady_rate = packets_rate(steady_window);

	/* 2. The ensemble restarted: stop all three, start all three. */
	bench_note("restarting every member of the ensemble");
	packets_delta(&c);
	t_restart = zkw_clock_mono_ns();
	stopper = zk_sh("stop", NULL);
	for (int m = 0; m < MAX_MEMBERS; m++)
		starters[m] = 0;
	t_serving = -1;
	min_good = nreaders;
	for (;;) {
		uint64_t now = zkw_clock_mono_ns();
		double t = (double)(now - t_restart) / 1e9;
		int serving, good = segments_good();
		long long n = packets_delta(&serving);

		if (nsamples < MAX_SAMPLES) {
			rate_t[nsamples] = t;
			rate_n[nsamples++] = n;
		}
		if (good < min_good)
			min_good = good;
		if (t_recovered < 0)
			during += n;
		else if (t - t_recovered <= after_s)
			after += n;
		if (stopper && zk_sh_status(stopper) >= 0) {
			stopper = 0;
			t_all_down = t;
			for (int m = 0; m < MAX_MEMBERS; m++) {
				char nb[8];

				snprintf(nb, sizeof(nb), "%d", m + 1);
				starters[m] = zk_sh("member-start", nb);
			}
		}
		if (!stopper && t_serving < 0) {
			int up = 0;

			for (int m = 0; m < MAX_MEMBERS; m++) {
				int st = starters[m] ? zk_sh_status(starters[m]) : 0;

				if (st > 0)
					bench_die("tools/zk.sh member-start %d failed (status %d)", m + 1,
					          st);
				if (st == 0)
					up++, starters[m] = 0;
			}
			if (up == MAX_MEMBERS || (up && !starters[0] && !starters[1] && !starters[2]))
				t_serving = t;
		}
		/* Recovered: every segment good again after the outage showed. */
		if (t_recovered < 0 && good == nreaders && min_good < nreaders)
			t_recovered = t;
		if (t_recovered >= 0 && t_serving >= 0 && t - t_recovered > after_s)
			break;
		if (t > 120)
			bench_die("no recovery within 120 s of the restart: %d of %d segments valid and "
			          "connected; ensemble %s",
			          good, nreaders, t_serving < 0 ? "not serving" : "serving");
		zkw_clock_sleep_until_ns(now + SAMPLE_NS);
	}
	/* Peak: the busiest second, from the 100 ms samples. */
	for (int i = 0; i < nsamples; i++) {
		long long sum = 0;

		for (int j = i; j < nsamples && rate_t[j] - rate_t[i] < 1.0; j++)
			sum += rate_n[j];
		if (sum > peak)
			peak = sum;
	}

	for (int b = 0; b < opt_brokers; b++)
		proc_stop_pid(brokers[b], SIGTERM, 10000);
	for (int i = 0; i < nreaders; i++)
		zkw_reader_close(&readers[i]);
	free(readers);
	zh = bench_zk_connect(hosts);
	zkw_zk_delete_tree(zh, base_path, NULL, 0);
	zkw_zk_close(zh);
	unlink(log_path); /* kept only when the bench fails */

	/* ---- report ---- */
	{
		double per_host_ping = ping_rate / opt_brokers, per_host_steady = steady_rate / opt_brokers;
		double per_watch_round = (steady_rate - ping_rate) / ((double)opt_brokers * opt_watches);
		double hosts_x = 10000.0 / opt_brokers;
		double watches = (double)opt_brokers * opt_watches;
		long long per_second[130] = {0};
		int last_second = 0;

		printf("## A fleet against a 3-node ensemble (bench_fleet)\n\n");
		printf("%d zkw-broker processes (one per simulated host), each watching the same %d nodes "
		       "with -f (%d segments in all), against a 3-member ensemble on this machine "
		       "(tools/zk.sh, tickTime 200 ms: sessions negotiate 4 s). ZooKeeper's load: "
		       "zk_packets_received summed over the members (mntr every 100 ms; client requests, "
		       "pings included). Steady state: --reconcile %d (the default is 60 s: a round here is "
		       "%.0fx shorter, so the reconcile part of the rate is %.0fx the default's). Recovery: "
		       "all three members stopped (tools/zk.sh stop) and started again "
		       "at once (member-start each).\n\n",
		       opt_brokers, opt_watches, nreaders, opt_reconcile, 60.0 / opt_reconcile,
		       60.0 / opt_reconcile);
		printf("| measure | fleet | per host |\n|---|---:|---:|\n");
		printf("| start-up: brokers started -> every segment valid | %.2f s | - |\n", t_up);
		printf("| steady, before the first reconcile round (pings) | %.1f requests/s | %.2f |\n",
		       ping_rate, per_host_ping);
		printf("| steady, over one round of --reconcile %d | %.1f requests/s | %.2f |\n",
		       opt_reconcile, steady_rate, per_host_steady);
		printf("| reconcile requests per watch per second (measured / 1/R) | %.4f / %.4f | - |\n",
		       per_watch_round, 1.0 / opt_reconcile);
		printf("| restart: stop issued -> every member down | %.2f s | - |\n", t_all_down);
		printf("| restart: stop issued -> every member serving again (zk.sh member-start done) | "
		       "%.2f s | - |\n",
		       t_serving);
		printf("| recovery: stop issued -> every segment valid and connected again | %.2f s | - |\n",
		       t_recovered);
		printf("| segments valid and connected at the worst moment | %d of %d | - |\n", min_good,
		       nreaders);
		printf("| recovery: requests from the stop until every segment was valid again | %lld | %.1f "
		       "|\n",
		       during, (double)during / opt_brokers);
		printf("| recovery: of them, per watch | %.2f | - |\n", (double)during / watches);
		printf("| busiest second of the recovery | %lld requests/s | %.1f |\n", peak,
		       (double)peak / opt_brokers);
		printf("| the %.0f s after (steady traffic resuming) | %.1f requests/s | %.2f |\n", after_s,
		       (double)after / after_s, (double)after / after_s / opt_brokers);

		printf("\n### On paper: 10,000 hosts\n\n");
		printf("Linear in the number of hosts (x%.0f of this fleet); measured per host above.\n\n",
		       hosts_x);
		printf("- Steady state, %d watches a host: the reconcile sends one request per watch and "
		       "round (measured %.4f per watch per second at --reconcile %d, i.e. 1/R), so at the "
		       "default 60 s a host sends %d/60 = %.2f requests/s and 10,000 hosts **%.0f "
		       "requests/s**, spread evenly (each round is jittered +-20%% and paced; "
		       "--reconcile-rate 50 a host does not bind below 3,000 watches a host). Pings only go "
		       "out on an idle session (every third of the session timeout), so they add at most "
		       "%.2f a host (%.0f for the fleet: measured %.2f a host with 4 s sessions; 10 s "
		       "sessions send 2.5x fewer). Exists requests are reads: every member "
		       "answers its own clients.\n",
		       opt_watches, per_watch_round, opt_reconcile, opt_watches, opt_watches / 60.0,
		       10000.0 * opt_watches / 60.0, per_host_ping, 10000.0 * per_host_ping, per_host_ping);
		printf("- Ensemble restart: from the stop until every segment was valid again the fleet sent "
		       "%.1f requests a host, %.2f a watch (the sessions resumed: reconnect, the watches "
		       "registered again, each node read again), %.1f a host in the busiest second. 10,000 "
		       "hosts of %d watches would send about **%.0f requests** then, **%.0f in one second** "
		       "if they all reconnected in step as here, where every session came back within the "
		       "same second. These reads are not paced by --reconcile-rate; a real fleet's clients "
		       "reconnect on their own timers, which spreads them somewhat, and a broker whose "
		       "session expired waits a jittered backoff before a new one (contract item 5). Then "
		       "the steady traffic resumes: %.2f requests a host a second in the "
		       "%.0f s after, against %.2f before the restart.\n",
		       (double)during / opt_brokers, (double)during / watches, (double)peak / opt_brokers,
		       opt_watches, hosts_x * (double)during, hosts_x * (double)peak,
		       (double)after / after_s / opt_brokers, after_s, per_host_steady);
		bench_data("fleet\t%d\t%d\t%.1f\t%.1f\t%lld\t%lld\t%.2f", opt_brokers, opt_watches, ping_rate,
		           steady_rate, during, peak, t_recovered);
		for (int i = 0; i < nsamples; i++) {
			int sec = (int)rate_t[i];

			if (sec >= 0 && sec < 130) {
				per_second[sec] += rate_n[i];
				last_second = sec > last_second ? sec : last_second;
			}
		}
		printf("\nRequests per second from the stop (summed over the members):");
		for (int i = 0; i <= last_second; i++)
			printf(" %lld", per_second[i]);
		printf(".\n");
	}
	printf("\n_bench_fleet finished in %.1f s._\n\n", (double)(zkw_clock_mono_ns() - t_start) / 1e9);
	return 0;
}
