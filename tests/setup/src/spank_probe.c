/*
 * spank_probe.c - experimental SPANK plugin for the MPI rig (MPI-RIG.md).
 * NOT the product: it answers where hpcc's SPANK plugin can see what.
 * plugstack.conf:  optional /path/spank_probe.so [ARG...]
 *   log=FILE          append one line per callback (default /tmp/hpcc-mpirig-out/spank.log)
 *   capture=1         in task_init_privileged: write the task's PMI/PMIX/SLURM env to
 *                     /run/hpcc/task-env-J.S.T (0600) and setenv() the PMIX_* / PMI_* /
 *                     SLURM_PROCID / SLURM_LOCALID variables into this process, i.e. into
 *                     the environment that the OCI runtime (exec'd next) inherits
 *   fail_node=NODE    fail (return -1) on NODE in the callback fail_at=
 *   fail_at=task_init_privileged|task_init|user_init|init_post_opt
 *   fail_kill=1       before failing: slurm_kill_job_step(job, step, SIGKILL) found
 *                     with dlsym(RTLD_DEFAULT) in slurmstepd
 *   check_ntasks=1    local (srun): refuse a --container step with more tasks than nodes
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>
#include <slurm/spank.h>

SPANK_PLUGIN(hpcc_probe, 1);

static const char *logf = "/tmp/hpcc-mpirig-out/spank.log";
static const char *fail_node, *fail_at = "task_init_privileged";
static int capture, fail_kill, check_ntasks;

static void parse(int ac, char **av)
{
    for (int i = 0; i < ac; i++) {
        if (!strncmp(av[i], "log=", 4)) logf = av[i] + 4;
        else if (!strcmp(av[i], "capture=1")) capture = 1;
        else if (!strncmp(av[i], "fail_node=", 10)) fail_node = av[i] + 10;
        else if (!strncmp(av[i], "fail_at=", 8)) fail_at = av[i] + 8;
        else if (!strcmp(av[i], "fail_kill=1")) fail_kill = 1;
        else if (!strcmp(av[i], "check_ntasks=1")) check_ntasks = 1;
    }
}

static void lg(spank_t sp, const char *cb, const char *fmt, ...)
{
    FILE *f = fopen(logf, "a");
    if (!f) return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    static const char *ctx[] = {"error", "local", "remote", "allocator", "slurmd", "job_script"};
    int c = spank_context();
    const char *node = getenv("SLURMD_NODENAME");
    uint32_t job = 0, step = 0, nn = 0, nt = 0, lt = 0, nid = 0;
    spank_err_t e1 = spank_get_item(sp, S_JOB_ID, &job);
    spank_get_item(sp, S_JOB_STEPID, &step);
    spank_err_t e2 = spank_get_item(sp, S_JOB_NNODES, &nn);
    spank_err_t e3 = spank_get_item(sp, S_JOB_TOTAL_TASK_COUNT, &nt);
    spank_get_item(sp, S_JOB_LOCAL_TASK_COUNT, &lt);
    spank_get_item(sp, S_JOB_NODEID, &nid);
    fprintf(f, "%ld.%06ld %-22s ctx=%s pid=%d node=%s job=%u.%u(e%d) nnodes=%u(e%d) ntasks=%u(e%d) local=%u nodeid=%u SLURM_CONTAINER(getenv)=%s ",
            (long)tv.tv_sec, (long)tv.tv_usec, cb, c >= 0 && c <= 5 ? ctx[c] : "?", (int)getpid(),
            node ? node : "-", job, step, e1, nn, e2, nt, e3, lt, nid,
            getenv("SLURM_CONTAINER") ? getenv("SLURM_CONTAINER") : "-");
    char buf[1024];
    if (spank_getenv(sp, "SLURM_CONTAINER", buf, sizeof buf) == ESPANK_SUCCESS)
        fprintf(f, "SLURM_CONTAINER(spank_getenv)=%s ", buf);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

static int maybe_fail(spank_t sp, const char *cb)
{
    const char *node = getenv("SLURMD_NODENAME");
    if (!fail_node || strcmp(cb, fail_at) || !node || strcmp(node, fail_node))
        return 0;
    uint32_t job = 0, step = 0;
    spank_get_item(sp, S_JOB_ID, &job);
    spank_get_item(sp, S_JOB_STEPID, &step);
    if (fail_kill) {
        int (*kill_step)(uint32_t, uint32_t, uint16_t) =
            (int (*)(uint32_t, uint32_t, uint16_t))dlsym(RTLD_DEFAULT, "slurm_kill_job_step");
        int rc = kill_step ? kill_step(job, step, SIGKILL) : -2;
        lg(sp, cb, "dlsym(slurm_kill_job_step)=%p rc=%d errno=%d", (void *)kill_step, rc, errno);
    }
    lg(sp, cb, "FAILING on purpose");
    slurm_error("hpcc_probe: refusing on node %s in %s (test)", node, cb);
    return -1;
}

#define CB(name)                                                  \
    int slurm_spank_##name(spank_t sp, int ac, char **av)         \
    {                                                             \
        parse(ac, av);                                            \
        lg(sp, #name, "");                                        \
        return maybe_fail(sp, #name);                             \
    }
CB(init)
CB(init_post_opt)
CB(user_init)
CB(task_post_fork)
CB(task_exit)
CB(exit)

int slurm_spank_local_user_init(spank_t sp, int ac, char **av)
{
    parse(ac, av);
    lg(sp, "local_user_init", "");
    if (!check_ntasks || !getenv("SLURM_CONTAINER"))
        return 0;
    uint32_t nn = 0, nt = 0;
    if (spank_get_item(sp, S_JOB_NNODES, &nn) || spank_get_item(sp, S_JOB_TOTAL_TASK_COUNT, &nt))
        return 0;
    if (nt > nn) {
        slurm_error("hpcc: --container runs one task per node on Slurm 22.05: %u tasks on %u nodes; use --ntasks-per-node=1", nt, nn);
        return -1;
    }
    return 0;
}

static void do_capture(spank_t sp, const char *cb)
{
    char **env = NULL;
    int n = 0;
    if (capture && spank_get_item(sp, S_JOB_ENV, &env) == ESPANK_SUCCESS && env) {
        uint32_t job = 0, step = 0, tid = 0;
        spank_get_item(sp, S_JOB_ID, &job);
        spank_get_item(sp, S_JOB_STEPID, &step);
        spank_get_item(sp, S_TASK_GLOBAL_ID, &tid);
        char path[256];
        snprintf(path, sizeof path, "/run/hpcc/task-env-%u.%u.%u%s", job, step, tid,
                 strcmp(cb, "task_init") ? "" : ".task_init");
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
        for (char **e = env; *e; e++) {
            if (strncmp(*e, "PMI", 3) && strncmp(*e, "SLURM_", 6))
                continue;
            if (f) fprintf(f, "%s\n", *e);
            if (!strncmp(*e, "PMIX_", 5) || !strncmp(*e, "PMI_", 4) ||
                !strncmp(*e, "SLURM_PROCID=", 13) || !strncmp(*e, "SLURM_LOCALID=", 14)) {
                char *eq = strchr(*e, '=');
                char *k = strndup(*e, eq - *e);
                setenv(k, eq + 1, 1);
                free(k);
                n++;
            }
        }
        if (f) fclose(f);
        lg(sp, cb, "captured to %s (%s), setenv %d PMI/PMIX/PROCID vars", path, f ? "ok" : strerror(errno), n);
    } else {
        lg(sp, cb, "");
    }
}

int slurm_spank_task_init_privileged(spank_t sp, int ac, char **av)
{
    parse(ac, av);
    do_capture(sp, "task_init_privileged");
    return maybe_fail(sp, "task_init_privileged");
}

int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
    parse(ac, av);
    do_capture(sp, "task_init");
    return maybe_fail(sp, "task_init");
}
