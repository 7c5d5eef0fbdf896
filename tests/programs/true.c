/* true: exits 0 at once. The foreign create+exit benchmark runs it, so
 * what is measured is starting and ending a process, not its work. */
int main(void)
{
    return 0;
}
