/**
 * Which notebooks the browser tests run, open or fill in (no browser here: plain files).
 *
 * Read at run time, so new notebooks are picked up:
 *   - E2E_NOTEBOOKS unset: the notebooks in notebooks/ whose name starts with one of
 *     LIGHT_NOTEBOOKS run in full; every other notebook in notebooks/ is opened and
 *     checked to render (they are executed by `make test` through nbval anyway).
 *   - E2E_NOTEBOOKS="all": every notebook in notebooks/ runs in full.
 *   - E2E_NOTEBOOKS="<glob or prefix>[,<glob or prefix>...]": those run in full, e.g.
 *     "notebooks/0[0-4]*.ipynb", "05,06" or "solutions/03*" (globs are relative to the repo;
 *     a bare prefix matches notebook names in notebooks/, exercises/, solutions/).
 *   - E2E_OPEN_ONLY: the same syntax, for the notebooks only opened (default: the rest of
 *     notebooks/; "" for none).
 *   - E2E_EXERCISE: the exercise notebook for the exercise test (default: chooseExercise()).
 */
import * as fs from 'fs';
import * as path from 'path';

/** Notebooks light enough to run in the browser on every CI run (name prefixes). Edit freely. */
export const LIGHT_NOTEBOOKS = ['00_', '04_'];

export const REPO = process.env.E2E_REPO || path.resolve(__dirname, '..', '..');
export const SERVER_ROOT = process.env.E2E_ROOT_DIR || REPO;
export const SMOKE = 'e2e/fixtures/smoke.ipynb';
export const EXERCISE_FIXTURE = 'e2e/fixtures/exercise.ipynb';

/** Lists the notebooks under a folder of the server root (repo-relative, sorted). */
export type NotebookLister = (dir: string) => string[];

export interface Selection {
  /** Run in full with "Run All Cells". */
  run: string[];
  /** Only opened and checked to render. */
  openOnly: string[];
}

/** The notebooks under `dir` (relative to `root`), recursively, hidden folders skipped; sorted. */
export function listNotebooks(dir: string, root: string = SERVER_ROOT): string[] {
  const abs = path.join(root, dir);
  if (!fs.existsSync(abs)) {
    return [];
  }
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const entry of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const child = path.posix.join(rel, entry.name);
      if (entry.isDirectory() && !entry.name.startsWith('.')) {
        walk(child);
      } else if (entry.isFile() && entry.name.endsWith('.ipynb')) {
        out.push(child);
      }
    }
  };
  walk(dir);
  return out.sort();
}

/** A glob as a RegExp: `**` any path, `*` within one folder, `?` one character, `[...]` a class. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i];
    if (ch === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (ch === '*') {
      re += '[^/]*';
    } else if (ch === '?') {
      re += '[^/]';
    } else if (ch === '[') {
      const end = glob.indexOf(']', i);
      re += end > i ? glob.slice(i, end + 1) : '\\[';
      i = end > i ? end : i;
    } else {
      re += ch.replace(/[.+^${}()|\\]/g, '\\$&');
    }
  }
  return new RegExp(`^${re}$`);
}

/** A pattern matches a repo-relative path (glob), or a notebook name prefix ("00", "05_fine"). */
export function matches(pattern: string, file: string): boolean {
  if (/[*?[/]/.test(pattern)) {
    return globToRegExp(pattern).test(file);
  }
  return path.posix.basename(file).startsWith(pattern);
}

/** The patterns of an E2E_NOTEBOOKS / E2E_OPEN_ONLY value (separated by commas or spaces). */
export function parsePatterns(spec: string): string[] {
  return spec.split(/[\s,]+/).filter(Boolean);
}

/** The notebook's name starts with one of LIGHT_NOTEBOOKS. */
export function isLight(file: string): boolean {
  return LIGHT_NOTEBOOKS.some(p => path.posix.basename(file).startsWith(p));
}

/** The settings selectNotebooks reads (default: the environment; a missing one is unset). */
export interface SelectionEnv {
  E2E_NOTEBOOKS?: string;
  E2E_OPEN_ONLY?: string;
}

/**
 * The notebooks to run and to open only, from E2E_NOTEBOOKS and E2E_OPEN_ONLY in `env` and the
 * notebooks `list` finds; throws when E2E_NOTEBOOKS matches none.
 */
export function selectNotebooks(
  env: SelectionEnv = process.env,
  list: NotebookLister = dir => listNotebooks(dir)
): Selection {
  const course = list('notebooks');
  const spec = (env.E2E_NOTEBOOKS || '').trim();
  let run: string[];
  if (!spec) {
    run = course.filter(isLight);
  } else if (spec === 'all') {
    run = course;
  } else {
    const patterns = parsePatterns(spec);
    const candidates = [...course, ...list('exercises'), ...list('solutions'), ...list('e2e/fixtures')];
    run = candidates.filter(f => patterns.some(p => matches(p, f)));
    if (run.length === 0) {
      throw new Error(`E2E_NOTEBOOKS=${spec} matches no notebook in ${candidates.join(', ')}`);
    }
  }
  run = run.filter(f => f !== SMOKE);
  const openSpec = env.E2E_OPEN_ONLY;
  if (openSpec !== undefined) {
    const patterns = parsePatterns(openSpec);
    const all = ['notebooks', 'exercises', 'solutions', 'e2e/fixtures'].flatMap(dir => list(dir));
    return { run, openOnly: all.filter(f => !run.includes(f) && patterns.some(p => matches(p, f))) };
  }
  return { run, openOnly: course.filter(f => !run.includes(f)) };
}

// ---------------------------------------------------------------------------------------
// The exercise for the exercise test
// ---------------------------------------------------------------------------------------

export interface ExerciseChoice {
  exercise: string;
  solution: string;
}

/** A cell's source as one string (nbformat allows a list of lines). */
export const cellSource = (c: any): string => (Array.isArray(c.source) ? c.source.join('') : c.source);

/** A notebook of the server root, parsed. */
export const readNb = (rel: string): any => JSON.parse(fs.readFileSync(path.join(SERVER_ROOT, rel), 'utf-8'));

/** The notebook holding the answers to an exercise. */
export function solutionFor(exercise: string): string {
  if (exercise === EXERCISE_FIXTURE) {
    return 'e2e/fixtures/exercise_solution.ipynb';
  }
  return exercise.replace(/^exercises\//, 'solutions/');
}

/** It has a solution, a `raise NotImplementedError` stub and a `check(...)` cell after it. */
export function isUsableExercise(rel: string): boolean {
  try {
    const nb = readNb(rel);
    const solution = solutionFor(rel);
    if (!fs.existsSync(path.join(SERVER_ROOT, solution))) {
      return false;
    }
    const code = (c: any) => (c.cell_type === 'code' ? cellSource(c) : '');
    const cells = nb.cells.map(code);
    const stub = cells.findIndex((s: string) => /raise NotImplementedError/.test(s));
    return stub >= 0 && cells.slice(stub + 1).some((s: string) => /\bcheck\s*\(/.test(s));
  } catch {
    return false;
  }
}

/** E2E_EXERCISE, else the first usable light exercise, else the first usable one, else the fixture. */
export function chooseExercise(): ExerciseChoice {
  let exercise = process.env.E2E_EXERCISE;
  if (!exercise) {
    const all = listNotebooks('exercises').filter(isUsableExercise);
    const light = all.filter(isLight);
    exercise = light[0] || all[0] || EXERCISE_FIXTURE;
  }
  return { exercise, solution: solutionFor(exercise) };
}
