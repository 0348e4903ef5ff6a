/**
 * Unit tests of the notebook selection (e2e/lib/select.ts): pure functions, no browser, no
 * JupyterLab. They run inside `make e2e` with the rest (playwright.config.ts wants E2E_PORT /
 * E2E_TOKEN), or alone: `make e2e E2E_ARGS="tests/4-select.spec.ts"`.
 */
import { expect, test } from '@playwright/test';
import {
  globToRegExp,
  isLight,
  LIGHT_NOTEBOOKS,
  listNotebooks,
  matches,
  NotebookLister,
  parsePatterns,
  selectNotebooks,
  SMOKE,
  solutionFor
} from '../lib/select';

/** A made-up course: what listNotebooks would find under each folder. */
const TREE: Record<string, string[]> = {
  notebooks: [
    'notebooks/00_setup.ipynb',
    'notebooks/01_features.ipynb',
    'notebooks/02_heavy.ipynb',
    'notebooks/03_probe.ipynb',
    'notebooks/04_augment.ipynb',
    'notebooks/05_fine_tune.ipynb',
    'notebooks/06_text.ipynb',
    'notebooks/07_domain.ipynb',
    'notebooks/08_budget.ipynb',
    'notebooks/09_capstone.ipynb'
  ],
  exercises: ['exercises/03_probe.ipynb', 'exercises/06_text.ipynb'],
  solutions: ['solutions/03_probe.ipynb', 'solutions/06_text.ipynb'],
  'e2e/fixtures': ['e2e/fixtures/exercise.ipynb', 'e2e/fixtures/exercise_solution.ipynb', SMOKE]
};
const list: NotebookLister = dir => TREE[dir] || [];
const nb = (...prefixes: string[]) =>
  prefixes.map(p => TREE.notebooks.find(f => f.startsWith(`notebooks/${p}_`)) as string);

test.describe('notebook selection (pure functions, no browser)', () => {
  test('LIGHT_NOTEBOOKS is the default light list', () => {
    expect(LIGHT_NOTEBOOKS).toEqual(['00_', '04_']);
    expect(isLight('notebooks/04_augment.ipynb')).toBe(true);
    expect(isLight('notebooks/08_budget.ipynb')).toBe(false);
    expect(isLight('exercises/04_probe.ipynb')).toBe(true);
    expect(isLight('exercises/03_probe.ipynb')).toBe(false);
    expect(isLight('notebooks/02_heavy.ipynb')).toBe(false);
    expect(isLight('notebooks/06_text.ipynb')).toBe(false);
  });

  test('globToRegExp: *, **, ?, [...] and literal characters', () => {
    expect(globToRegExp('notebooks/0[0-4]*.ipynb').source).toBe('^notebooks\\/0[0-4][^/]*\\.ipynb$');
    expect(globToRegExp('notebooks/0[0-4]*.ipynb').test('notebooks/04_augment.ipynb')).toBe(true);
    expect(globToRegExp('notebooks/0[0-4]*.ipynb').test('notebooks/05_fine_tune.ipynb')).toBe(false);
    expect(globToRegExp('*.ipynb').test('notebooks/00_setup.ipynb')).toBe(false); // * stays in a folder
    expect(globToRegExp('**.ipynb').test('notebooks/00_setup.ipynb')).toBe(true);
    expect(globToRegExp('**/00_*').test('notebooks/00_setup.ipynb')).toBe(true);
    expect(globToRegExp('notebooks/0?_setup.ipynb').test('notebooks/00_setup.ipynb')).toBe(true);
    expect(globToRegExp('notebooks/0?_setup.ipynb').test('notebooks/0/_setup.ipynb')).toBe(false);
    expect(globToRegExp('notebooks/00_setup.ipynb').test('notebooks/00_setupXipynb')).toBe(false); // "." literal
    expect(globToRegExp('a[b').test('a[b')).toBe(true); // an unclosed "[" is literal
  });

  test('matches: a glob matches the repo-relative path, a bare prefix the notebook name', () => {
    expect(matches('05', 'notebooks/05_fine_tune.ipynb')).toBe(true);
    expect(matches('05_fine', 'notebooks/05_fine_tune.ipynb')).toBe(true);
    expect(matches('05', 'solutions/05_fine_tune.ipynb')).toBe(true);
    expect(matches('5', 'notebooks/05_fine_tune.ipynb')).toBe(false);
    expect(matches('notebooks/0[0-4]*.ipynb', 'notebooks/03_probe.ipynb')).toBe(true);
    expect(matches('notebooks/0[0-4]*.ipynb', 'exercises/03_probe.ipynb')).toBe(false);
    expect(matches('solutions/03*', 'solutions/03_probe.ipynb')).toBe(true);
    expect(matches('solutions/03*', 'exercises/03_probe.ipynb')).toBe(false);
    // A path without a wildcard is a glob too: it must match exactly.
    expect(matches('notebooks/03_probe.ipynb', 'notebooks/03_probe.ipynb')).toBe(true);
    expect(matches('notebooks/03', 'notebooks/03_probe.ipynb')).toBe(false);
  });

  test('parsePatterns: commas and/or spaces', () => {
    expect(parsePatterns('05,06')).toEqual(['05', '06']);
    expect(parsePatterns(' 05, 06  notebooks/0[0-4]*.ipynb ,')).toEqual(['05', '06', 'notebooks/0[0-4]*.ipynb']);
    expect(parsePatterns('')).toEqual([]);
  });

  test('E2E_NOTEBOOKS unset: the light notebooks run, the rest of notebooks/ is opened', () => {
    for (const env of [{}, { E2E_NOTEBOOKS: '' }, { E2E_NOTEBOOKS: '  ' }]) {
      const s = selectNotebooks(env, list);
      expect(s.run).toEqual(nb('00', '04'));
      expect(s.openOnly).toEqual(nb('01', '02', '03', '05', '06', '07', '08', '09'));
    }
  });

  test('E2E_NOTEBOOKS=all: every notebook in notebooks/ runs, none is only opened', () => {
    const s = selectNotebooks({ E2E_NOTEBOOKS: 'all' }, list);
    expect(s.run).toEqual(TREE.notebooks);
    expect(s.openOnly).toEqual([]);
  });

  test('E2E_NOTEBOOKS with prefixes', () => {
    const s = selectNotebooks({ E2E_NOTEBOOKS: '05,06' }, list);
    expect(s.run).toEqual([...nb('05', '06'), 'exercises/06_text.ipynb', 'solutions/06_text.ipynb']);
    expect(s.openOnly).toEqual(nb('00', '01', '02', '03', '04', '07', '08', '09'));
    expect(selectNotebooks({ E2E_NOTEBOOKS: '00' }, list).run).toEqual(nb('00'));
    expect(selectNotebooks({ E2E_NOTEBOOKS: '00 09' }, list).run).toEqual(nb('00', '09'));
  });

  test('E2E_NOTEBOOKS with globs', () => {
    expect(selectNotebooks({ E2E_NOTEBOOKS: 'notebooks/0[0-4]*.ipynb' }, list).run).toEqual(
      nb('00', '01', '02', '03', '04')
    );
    expect(selectNotebooks({ E2E_NOTEBOOKS: 'solutions/03*' }, list)).toEqual({
      run: ['solutions/03_probe.ipynb'],
      openOnly: TREE.notebooks
    });
    expect(selectNotebooks({ E2E_NOTEBOOKS: 'e2e/fixtures/exercise.ipynb' }, list).run).toEqual([
      'e2e/fixtures/exercise.ipynb'
    ]);
  });

  test('the smoke fixture never counts among the notebooks (it runs first, on its own)', () => {
    expect(selectNotebooks({ E2E_NOTEBOOKS: 'e2e/fixtures/*' }, list).run).toEqual([
      'e2e/fixtures/exercise.ipynb',
      'e2e/fixtures/exercise_solution.ipynb'
    ]);
    expect(selectNotebooks({ E2E_NOTEBOOKS: 'smoke' }, list).run).toEqual([]); // it matched, then was dropped
  });

  test('E2E_NOTEBOOKS that matches nothing is an error', () => {
    expect(() => selectNotebooks({ E2E_NOTEBOOKS: '99' }, list)).toThrow(/E2E_NOTEBOOKS=99 matches no notebook/);
    expect(() => selectNotebooks({ E2E_NOTEBOOKS: 'notebooks/*.py' }, list)).toThrow(/matches no notebook/);
  });

  test('E2E_OPEN_ONLY: only those are opened ("" for none), never one that runs', () => {
    expect(selectNotebooks({ E2E_OPEN_ONLY: '' }, list).openOnly).toEqual([]);
    expect(selectNotebooks({ E2E_OPEN_ONLY: '02,exercises/*' }, list).openOnly).toEqual([
      ...nb('02'),
      'exercises/03_probe.ipynb',
      'exercises/06_text.ipynb'
    ]);
    expect(selectNotebooks({ E2E_NOTEBOOKS: '00', E2E_OPEN_ONLY: '00,01' }, list)).toEqual({
      run: nb('00'),
      openOnly: nb('01')
    });
  });

  test('listNotebooks: the notebooks of a folder of the server root, repo-relative and sorted', () => {
    const found = listNotebooks('notebooks');
    expect(found.length).toBeGreaterThan(0);
    expect(found).toEqual([...found].sort());
    for (const f of found) {
      expect(f).toMatch(/^notebooks\/.+\.ipynb$/);
    }
    expect(listNotebooks('e2e/fixtures')).toContain(SMOKE);
    expect(listNotebooks('no-such-folder')).toEqual([]);
  });

  test('solutionFor: exercises/ to solutions/, the fixture to its own solution', () => {
    expect(solutionFor('exercises/03_probe.ipynb')).toBe('solutions/03_probe.ipynb');
    expect(solutionFor('e2e/fixtures/exercise.ipynb')).toBe('e2e/fixtures/exercise_solution.ipynb');
  });
});
