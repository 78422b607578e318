/** The public `ops` namespace: every op function, also installed as Tensor methods' backing table. */
import { opsRef } from '../tensor.ts';
import * as elementwise from './elementwise.ts';
import * as reduce from './reduce.ts';
import * as shape from './shape.ts';
import * as nn from './nn.ts';
import * as creation from './creation.ts';

export * from './elementwise.ts';
export * from './reduce.ts';
export * from './shape.ts';
export * from './nn.ts';
export * from './creation.ts';

Object.assign(opsRef, elementwise, reduce, shape, nn, creation);
