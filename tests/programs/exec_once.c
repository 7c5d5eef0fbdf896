/* Says who it is; with an argument, tries to run that program (execv),
   and says how that went: the test of a confined process's one exec. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    printf("exec_once %s\n", argv[0]);
    fflush(stdout);
    if (argc > 1) {
        char *args[] = {argv[1], NULL};
        execv(argv[1], args);
        printf("execv %s: %s\n", argv[1], strerror(errno));
        return 3;
    }
    return 0;
}
