/* lagprobe demo: keys switch the failure mode while it runs. The terminal
 * goes into a raw-ish mode (no line buffering, no echo; Ctrl-C still sends
 * SIGINT), restored on every way out of main.
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include "demo.h"

#include <poll.h>
#include <stdlib.h>
#include <termios.h>
#include <unistd.h>

static struct termios g_tio_saved;
static int g_tio_set;

void keys_off(void) {
        if (g_tio_set) {
                tcsetattr(STDIN_FILENO, TCSANOW, &g_tio_saved);
                g_tio_set = 0;
        }
}

/* Only for a terminal we own: a background job touching the terminal
 * would be stopped by SIGTTOU. Returns 1 when keys are on. */
int keys_on(void) {
        if (!isatty(STDIN_FILENO) || tcgetpgrp(STDIN_FILENO) != getpgrp() ||
            tcgetattr(STDIN_FILENO, &g_tio_saved) != 0)
                return 0;
        struct termios raw = g_tio_saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) != 0)
                return 0;
        g_tio_set = 1;
        atexit(keys_off);
        return 1;
}

void print_keys(void) {
        char line[512];
        size_t off = 0;
        for (int i = 0; i < MODE__CNT; i++)
                off += (size_t)snprintf(line + off, sizeof line - off,
                                        "%s%c %s", i ? ", " : "",
                                        g_modes[i].key, g_modes[i].name);
        say("%6.1fs [keys] %s; q quit, ? this list\n", t_now(), line);
}

/* Reads what was typed since the last call, without waiting. */
int read_keys(void) {
        struct pollfd pfd = {STDIN_FILENO, POLLIN, 0};
        char buf[16];
        int quit = 0;
        while (poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN)) {
                ssize_t r = read(STDIN_FILENO, buf, sizeof buf);
                if (r <= 0)
                        return quit;
                for (ssize_t i = 0; i < r; i++) {
                        int mode = mode_by_key(buf[i]);
                        if (mode >= 0)
                                set_mode(mode, "key");
                        else if (buf[i] == 'q') {
                                quit = 1;
                                atomic_store(&g_stop, 1);
                        } else if (buf[i] == '?')
                                print_keys();
                }
        }
        return quit;
}
