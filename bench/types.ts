/** One measured number from a benchmark (`bench/<area>.ts` exports `run(): Promise<BenchResult[]>`). */
export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  note?: string;
}
