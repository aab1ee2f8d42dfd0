/**
 * Is the other end of a pipe or socket gone, asked without writing? poll(2) reports POLLERR (a pipe whose last
 * reader closed), POLLHUP (a socket whose peer closed, a terminal hung up) and POLLNVAL (no such descriptor) even when
 * no event is asked for, so a writer with nothing to write can still find out that nobody reads.
 */
import { libc, POLLERR, POLLFD_SIZE, POLLHUP, POLLNVAL } from './libc.ts';

const GONE = POLLERR | POLLHUP | POLLNVAL;

/** True when `fd`'s reader (or peer) has gone away; never blocks (timeout 0). */
export function peerGone(fd: number): boolean {
  const pollfd = Buffer.alloc(POLLFD_SIZE);
  pollfd.writeInt32LE(fd, 0); // events 0: only the conditions poll always reports
  if (libc().poll(pollfd, 1, 0) !== 1) return false;
  return (pollfd.readInt16LE(6) & GONE) !== 0;
}
