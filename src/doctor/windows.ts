/**
 * Windows checks. (Filled in below in this branch.)
 */
import type { Check } from './check.ts';
import type { DoctorContext } from './context.ts';
import type { BoundSocket } from './listeners.ts';

export async function windowsChecks(_ctx: DoctorContext): Promise<{ checks: Check[]; repairs: string[]; sockets: BoundSocket[] | null }> {
  return { checks: [], repairs: [], sockets: null };
}
