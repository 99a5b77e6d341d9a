// nftables blocks for the browser tests: drop traffic to (and from) a port for a while,
// in a table of its own that is removed afterwards (or at process exit). Needs root.

import { execFileSync } from "node:child_process";

/** A table of drop rules; `remove()` is idempotent and also runs at process exit. */
export class NftBlock {
  #table: string | undefined;

  /**
   * Adds `table` with one counting drop rule per match (e.g. `udp dport 40000`) on the
   * input hook, ahead of any accept rules.
   */
  constructor(table: string, matches: string[]) {
    const chain = "{ type filter hook input priority -10 ; policy accept ; }";
    const rules = matches.map((match) => `add rule inet ${table} input ${match} counter drop`).join("\n");
    execFileSync("nft", ["-f", "-"], { input: `add table inet ${table}\nadd chain inet ${table} input ${chain}\n${rules}\n` });
    this.#table = table;
    process.once("exit", () => this.remove());
  }

  /** Packets the rules dropped so far (summed over the rules). */
  dropped(): number {
    if (!this.#table) return NaN;
    const listing = execFileSync("nft", ["list", "table", "inet", this.#table]).toString();
    return [...listing.matchAll(/counter packets (\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
  }

  /** Removes the table. */
  remove(): void {
    if (!this.#table) return;
    try {
      execFileSync("nft", ["delete", "table", "inet", this.#table]);
    } catch (error) {
      console.error(`could not remove nftables table ${this.#table}: ${String(error)}`);
    }
    this.#table = undefined;
  }
}

/** Whether this process may add nftables rules (root, and `nft` installed). */
export function canUseNft(): boolean {
  try {
    execFileSync("nft", ["--version"]);
    return process.getuid?.() === 0;
  } catch {
    return false;
  }
}
