/* A hostile image's LD_PRELOAD payload (tests/tests/hostile.rs): its
 * constructor runs in every dynamically linked process that loads it and
 * appends "<executable> <pid>" to a marker file on the host. The file is
 * $HPCC_PRELOAD_MARKER when set (the image sets it in process.env next to
 * LD_PRELOAD), else /tmp/hpcc-preload-marker. A root process of hpcc that
 * loads it would have run the image's code as root on the host. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((constructor)) static void hpcc_preload_marker(void)
{
    const char *path = getenv("HPCC_PRELOAD_MARKER");
    char exe[512] = "?", line[640];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    int fd, len;

    if (!path || !*path)
        path = "/tmp/hpcc-preload-marker";
    if (n > 0)
        exe[n] = '\0';
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    len = snprintf(line, sizeof line, "%s %d\n", exe, (int)getpid());
    if (len > 0 && write(fd, line, (size_t)len) < 0)
        len = 0;
    close(fd);
}
